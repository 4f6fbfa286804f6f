import Foundation

/// One operation line of libblkfault.so's trace (BLKFAULT_TRACE, JSON Lines).
struct TraceRecord: Codable {
    var pid: Int32
    var tid: Int32
    var image: String
    var op: String
    var offset: Int64
    var length: Int64
    var events: [String]
    var events_after: [String]?
    var inferred: [String]?
    var state_before: Int
    var state_after: Int
    var action: String
    var errno: Int32?
    var rule_line: Int?
    /// blkfault's own actions on this operation (crash, torn write, corrupt, break, delay).
    var actions: [TakenAction]?

    struct TakenAction: Codable { var action: String }

    /// Whether a rule did something to this operation.
    var acted: Bool { action != "pass" || !(actions ?? []).isEmpty }
}

/// One event raised on a matched image, numbered per process and image as blkdebug counts
/// (each blkdebug node counts its own events; a new process is a new node).
struct EventRaise: Codable, Equatable {
    var event: String
    /// 1-based: the how-manieth time this process raised this event on this image.
    var occurrence: Int
    var op: String
    var offset: Int64
    var length: Int64
    var pid: Int32
    var tid: Int32
    var image: String
    var state: Int
    /// blkfault inferred the event from QEMU 7.2's algorithm rather than seeing its own I/O.
    var inferred: Bool
}

enum TraceFile {
    /// Reads a trace; lines that are not operation records (e.g. a bypass note) are skipped.
    /// A line cut short by a killed process is skipped too.
    static func records(at path: String) throws(BlkfaultError) -> [TraceRecord] {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw .cannotOpen(path, "no such file or not readable")
        }
        let decoder = JSONDecoder()
        var out: [TraceRecord] = []
        for line in data.split(separator: UInt8(ascii: "\n")) where !line.isEmpty {
            if let r = try? decoder.decode(TraceRecord.self, from: Data(line)) { out.append(r) }
        }
        return out
    }

    /// The events in `records`, in trace order, numbered per (pid, image, event).
    /// "none" is blkdebug's placeholder for I/O with no event of its own: not a fault point.
    static func raises(_ records: [TraceRecord]) -> [EventRaise] {
        struct Key: Hashable { let pid: Int32; let image: String; let event: String }
        var counts: [Key: Int] = [:]
        var out: [EventRaise] = []
        for r in records {
            let guessed = Set(r.inferred ?? [])
            for (events, state) in [(r.events, r.state_before), (r.events_after ?? [], r.state_after)] {
                for e in events where e != "none" {
                    let k = Key(pid: r.pid, image: r.image, event: e)
                    counts[k, default: 0] += 1
                    out.append(EventRaise(event: e, occurrence: counts[k]!, op: r.op, offset: r.offset,
                                          length: r.length, pid: r.pid, tid: r.tid, image: r.image,
                                          state: state, inferred: guessed.contains(e)))
                }
            }
        }
        return out
    }

    /// Reads either an event file written by `blkfault trace` or a raw BLKFAULT_TRACE file.
    static func loadRaises(at path: String) throws(BlkfaultError) -> [EventRaise] {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw .cannotOpen(path, "no such file or not readable")
        }
        let decoder = JSONDecoder()
        var raises: [EventRaise] = []
        var records: [TraceRecord] = []
        for line in data.split(separator: UInt8(ascii: "\n")) where !line.isEmpty {
            if let e = try? decoder.decode(EventRaise.self, from: Data(line)) {
                raises.append(e)
            } else if let r = try? decoder.decode(TraceRecord.self, from: Data(line)) {
                records.append(r)
            }
        }
        return raises + Self.raises(records)
    }

    static func jsonLines(_ raises: [EventRaise]) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return raises.map { String(decoding: (try? encoder.encode($0)) ?? Data(), as: UTF8.self) + "\n" }.joined()
    }

    /// Counts per event, in the order the events were first raised.
    static func summary(_ raises: [EventRaise]) -> [(event: String, count: Int, maxOccurrence: Int, inferred: Bool)] {
        var order: [String] = []
        var count: [String: Int] = [:]
        var maxOcc: [String: Int] = [:]
        var inferred: [String: Bool] = [:]
        for r in raises {
            if count[r.event] == nil { order.append(r.event) }
            count[r.event, default: 0] += 1
            maxOcc[r.event] = max(maxOcc[r.event] ?? 0, r.occurrence)
            inferred[r.event] = (inferred[r.event] ?? false) || r.inferred
        }
        return order.map { ($0, count[$0]!, maxOcc[$0]!, inferred[$0]!) }
    }
}
