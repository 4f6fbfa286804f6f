/* The Swift runtime's two command-line entry points (what `CommandLine.arguments`
 * reads), defined here so that the linker takes no CommandLine.cpp.o from the static
 * libswiftCore.a. That file's static initializer finds argv by parsing /proc/self/maps
 * line by line (sscanf): ~0.35 M instructions and an fopen in every process that loads
 * the engine, for arguments the engine never reads (issue 7, callgrind). glibc hands
 * argc and argv to every ELF constructor, also in a dlopen'ed library. */

static char **grabbed_argv;
static int grabbed_argc;
static char **override_argv;
static int override_argc;

__attribute__((constructor)) static void blkfault_grab_arguments(int argc, char **argv, char **envp)
{
    (void)envp;
    grabbed_argc = argc;
    grabbed_argv = argv;
}

void _swift_stdlib_overrideUnsafeArgvArgc(char **argv, int argc)
{
    override_argv = argv;
    override_argc = argc;
}

char **_swift_stdlib_getUnsafeArgvArgc(int *outArgLen)
{
    static char *empty[] = { 0 };
    if (override_argv) {
        *outArgLen = override_argc;
        return override_argv;
    }
    if (grabbed_argv) {
        *outArgLen = grabbed_argc;
        return grabbed_argv;
    }
    *outArgLen = 0;
    return empty;
}
