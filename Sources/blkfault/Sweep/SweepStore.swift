import Foundation

/// What defines a sweep: a rerun with the same manifest resumes; a different one is refused.
struct SweepManifest: Codable, Equatable {
    var version = 1
    var command: [String]
    var setup: String?
    var check: String?
    var images: [String]
    var errnos: [Int32]
    var once: [Bool]
    var crash: Bool
    var events: [String]?
    var maxOccurrences: Int
    var timeout: Double
}

/// The output directory:
///   manifest.json, points.json (from the traced run), template/ (what --setup made),
///   baseline/ (the traced run), results/ID.json, cases/ID/ (logs), repro/ID/ (bundles).
struct SweepStore {
    let out: String

    var manifestPath: String { out + "/manifest.json" }
    var pointsPath: String { out + "/points.json" }
    var resultsDir: String { out + "/results" }
    var template: String { out + "/template" }

    static let encoder: JSONEncoder = {
        let e = JSONEncoder()
        e.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        return e
    }()

    func prepare(_ manifest: SweepManifest) throws {
        try FileManager.default.createDirectory(atPath: resultsDir, withIntermediateDirectories: true)
        if let data = FileManager.default.contents(atPath: manifestPath) {
            guard let old = try? JSONDecoder().decode(SweepManifest.self, from: data), old == manifest else {
                throw BlkfaultError.sweep("\(out) holds a different sweep (see \(manifestPath)): use another --out, or delete it")
            }
            return
        }
        try Self.encoder.encode(manifest).write(to: URL(fileURLWithPath: manifestPath))
    }

    func manifest() throws -> SweepManifest {
        guard let data = FileManager.default.contents(atPath: manifestPath) else {
            throw BlkfaultError.sweep("\(out): no manifest.json: not a sweep directory")
        }
        return try JSONDecoder().decode(SweepManifest.self, from: data)
    }

    func savedPoints() -> [FaultPoint]? {
        guard let data = FileManager.default.contents(atPath: pointsPath) else { return nil }
        return try? JSONDecoder().decode([FaultPoint].self, from: data)
    }

    func save(points: [FaultPoint]) throws {
        try Self.encoder.encode(points).write(to: URL(fileURLWithPath: pointsPath))
    }

    /// Written atomically: a case interrupted half-way leaves no result and runs again on resume.
    func save(_ r: CaseResult) throws {
        try Self.encoder.encode(r).write(to: URL(fileURLWithPath: resultsDir + "/" + r.id + ".json"), options: .atomic)
    }

    func results() -> [String: CaseResult] {
        var out: [String: CaseResult] = [:]
        let files = (try? FileManager.default.contentsOfDirectory(atPath: resultsDir)) ?? []
        for f in files where f.hasSuffix(".json") {
            if let d = FileManager.default.contents(atPath: resultsDir + "/" + f),
               let r = try? JSONDecoder().decode(CaseResult.self, from: d) {
                out[r.id] = r
            }
        }
        return out
    }
}
