/// How one sweep case ended, worst first in `severity`.
enum Outcome: String, Codable, CaseIterable, Comparable {
    case corruption
    case crashed = "target-crashed"
    case hung = "target-hung"
    case checkFailed = "check-failed"
    case leaks = "leaks-only"
    case errorReportedClean = "error-reported-and-clean"
    case clean
    /// The traced run reached this point, but this run never did: the fault was not injected.
    case notReached = "fault-not-reached"

    /// Lower is worse.
    var severity: Int { Self.allCases.firstIndex(of: self)! }
    static func < (a: Outcome, b: Outcome) -> Bool { a.severity < b.severity }

    /// A failure in JUnit and in the exit status: the program or the image is hurt.
    var isFailure: Bool { [.corruption, .crashed, .hung, .checkFailed].contains(self) }

    /// Gets a repro bundle: every fault that changed the run's result (the program's error
    /// report included; a clean run or an unreached point has nothing to reproduce).
    var needsRepro: Bool { ![.clean, .notReached].contains(self) }

    /// Listed under "needs a look" in the summary: the image or the program got hurt.
    var needsALook: Bool { isFailure || self == .leaks }

    var short: String {
        switch self {
        case .corruption: return "corrupt"
        case .crashed: return "crashed"
        case .hung: return "hung"
        case .checkFailed: return "check failed"
        case .leaks: return "leaks"
        case .errorReportedClean: return "err+clean"
        case .clean: return "clean"
        case .notReached: return "not reached"
        }
    }
}

/// What the check said about the images after the run.
enum CheckVerdict: String, Codable {
    case clean, leaks, corruption, failed
}

/// The decision table: target end × whether the fault fired × check verdict -> outcome.
enum Classifier {
    static func classify(kind: FaultKind, target: ProcessEnd, fired: Bool, check: CheckVerdict) -> Outcome {
        switch target {
        case .timedOut: return .hung
        case .signaled(let s):
            let injectedCrash = kind == .crash && s == SIGKILL && fired
            if !injectedCrash { return .crashed }
        default: break
        }
        switch check {
        case .failed: return .checkFailed
        case .corruption: return .corruption
        case .leaks: return .leaks
        case .clean:
            if !fired { return .notReached }
            if kind == .crash { return .clean }
            return target == .exited(0) ? .clean : .errorReportedClean
        }
    }

    /// qemu-img check's exit status (also the convention for --check commands):
    /// 0 clean, 2 corruption, 3 leaks only; anything else: the check itself failed.
    static func verdict(checkStatus: ProcessEnd) -> CheckVerdict {
        switch checkStatus {
        case .exited(0): return .clean
        case .exited(2): return .corruption
        case .exited(3): return .leaks
        default: return .failed
        }
    }
}

#if canImport(Glibc)
import Glibc
#endif
