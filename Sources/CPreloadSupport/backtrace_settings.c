/* The Swift runtime's backtracer settings, defined here so that the linker takes no
 * Backtrace.cpp.o (nor the CrashHandlerLinux.cpp.o it brings) from the static
 * libswiftCore.a. That file's static initializer looks for the swift-backtrace program
 * in seven places at every load of the engine (~15 K instructions and as many path
 * probes; issue 7, s8-7a), and where it found one it would install crash signal handlers
 * in the program blkfault runs in. Only the runtime's error reporting reads the settings
 * (swift_reportError: whether the backtracer is on); all zero, it is off, as it was
 * already when no swift-backtrace was found. The runtime's object is 0x58 bytes. */

__attribute__((aligned(16))) char _swift_backtraceSettings[0x80];

/* swiftrt.o (every Swift image's registration object) refers to this one, which would
 * bring Backtrace.cpp.o too. It tells a backtrace which frames are thunks; the engine
 * prints no backtrace. */
_Bool _swift_backtrace_isThunkFunction(const char *mangledName)
{
    (void)mangledName;
    return 0;
}
