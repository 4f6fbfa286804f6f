#if canImport(Glibc)
import Glibc
#endif

/// An `ImageEngine` shared by threads (QEMU's worker threads), behind a plain
/// pthread mutex. Not Synchronization.Mutex: on Linux that is a priority-inheritance
/// futex, whose every contended acquisition goes through the kernel (measured: 8
/// threads on one image cost ~90x one thread; Benchmarks/, "engine locked").
///
/// The engine lives behind a pointer, not in a `var` of the class: a class's stored
/// `var` is checked for exclusive access at run time on every access (two runtime
/// calls per request), and the mutex already guarantees it. `withLock` is inlinable so
/// that the preload's closure is inlined rather than called through a generic.
public final class LockedEngine: @unchecked Sendable {
    @usableFromInline let engine: UnsafeMutablePointer<ImageEngine>
    @usableFromInline let mutex: UnsafeMutablePointer<pthread_mutex_t>

    public init(_ engine: ImageEngine) {
        self.engine = .allocate(capacity: 1)
        self.engine.initialize(to: engine)
        mutex = .allocate(capacity: 1)
        var attr = pthread_mutexattr_t()
        pthread_mutexattr_init(&attr)
        // Spins briefly before sleeping: the engine holds the lock for well under a microsecond.
        pthread_mutexattr_settype(&attr, Int32(PTHREAD_MUTEX_ADAPTIVE_NP))
        pthread_mutex_init(mutex, &attr)
        pthread_mutexattr_destroy(&attr)
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
        engine.deinitialize(count: 1)
        engine.deallocate()
    }

    /// The engine itself, for a caller that serialises every access to it with a lock of
    /// its own (the preload's futex word, blkfault_lock.h); never mixed with `withLock`.
    @inlinable public var unlockedEngine: UnsafeMutablePointer<ImageEngine> { engine }

    @inlinable @inline(__always)
    public func withLock<R>(_ body: (inout ImageEngine) throws -> R) rethrows -> R {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body(&engine.pointee)
    }
}
