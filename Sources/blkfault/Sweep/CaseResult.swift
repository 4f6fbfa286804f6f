/// One finished sweep case, as stored in OUT/results/ID.json and in the JSON report.
struct CaseResult: Codable, Equatable {
    var id: String
    var event: String
    var occurrence: Int
    var inferred: Bool
    var fault: String
    var errno: Int32?
    var once: Bool?
    var crash: Bool
    var outcome: Outcome
    var target: String
    var check: String
    /// How many operations a rule acted on (failed, pretended, crashed...).
    var actions: Int
    var rules: String
    var targetOutput: String
    var checkOutput: String
    /// The repro bundle's directory (relative to OUT), for non-clean outcomes.
    var repro: String?
    /// The one-line command that reproduces the case after the setup.
    var reproCommand: String?
    var seconds: Double

    var sweepCase: SweepCase {
        SweepCase(point: FaultPoint(event: event, occurrence: occurrence, inferred: inferred),
                  kind: crash ? .crash : .error(errno: errno ?? 5, once: once ?? true))
    }
}
