#if canImport(Glibc)
import Glibc
#endif
import CEngineLock

/// An `ImageEngine` shared by threads (QEMU's worker threads), behind a futex word
/// (blkfault_lock.h: taken and released inline, one atomic instruction each when nobody
/// waits; contended, a short spin, then the kernel). Not Synchronization.Mutex: on Linux
/// that is a priority-inheritance futex, whose every contended acquisition goes through
/// the kernel (measured: 8 threads on one image cost ~90x one thread; Benchmarks/,
/// "engine locked"). Not a pthread mutex: two calls through the PLT and its owner
/// bookkeeping, ~67 instructions a request (issue 7). The preload's one lock per image.
///
/// The engine lives behind a pointer, not in a `var` of the class: a class's stored
/// `var` is checked for exclusive access at run time on every access (two runtime
/// calls per request), and the lock already guarantees it. `withLock` is inlinable so
/// that the caller's closure is inlined rather than called through a generic.
public final class LockedEngine: @unchecked Sendable {
    @usableFromInline let engine: UnsafeMutablePointer<ImageEngine>
    /// 0 free, 1 held, 2 held with (possible) sleepers.
    @usableFromInline let word: UnsafeMutablePointer<UInt32>

    public init(_ engine: ImageEngine) {
        self.engine = .allocate(capacity: 1)
        self.engine.initialize(to: engine)
        word = .allocate(capacity: 1)
        word.initialize(to: 0)
    }

    deinit {
        word.deallocate()
        engine.deinitialize(count: 1)
        engine.deallocate()
    }

    @inlinable @inline(__always)
    public func withLock<R>(_ body: (inout ImageEngine) throws -> R) rethrows -> R {
        blkfault_lock(word)
        defer { blkfault_unlock(word) }
        return try body(&engine.pointee)
    }
}
