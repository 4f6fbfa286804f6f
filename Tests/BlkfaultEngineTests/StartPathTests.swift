import Testing
@testable import BlkfaultEngine

/// The engine's start takes shortcuts around tables and generic helpers that cost the
/// Swift runtime's metadata (issue 7, s8-7a); each must answer exactly what the table or
/// helper it replaces answers.
@Suite struct StartPathTests {
    @Test func everyEventNameFromTheTable() {
        for (i, row) in BlkdebugEvent.table.enumerated() {
            #expect(row.event.rawValue == i)
            #expect(BlkdebugEvent(name: row.name) == row.event, "\(row.name)")
        }
        #expect(Set(BlkdebugEvent.table.map(\.name)).count == BlkdebugEvent.allCases.count)
        for miss in ["", "L2_load", "l2_load ", " l2_load", "l2", "l2_loadx", "flush", "none\n"] {
            #expect(BlkdebugEvent(name: miss) == nil, "\(miss)")
        }
    }

    @Test func keyKindsAgreeWithTheParameterTables() {
        var names = Set(RuleSection.allCases.flatMap { $0.parameters.map(\.name) })
        names.formUnion(["id", "", "Event", "event ", "lose_unsynced", "delay_ns", "new-state", "tags"])
        for section in RuleSection.allCases {
            for name in names {
                let expected = section.parameters.first { $0.name == name }?.kind
                #expect(section.kind(of: Array(name.utf8)) == expected, "[\(section.rawValue)] \(name)")
            }
        }
        // Invalid UTF-8 matches nothing.
        #expect(RuleSection.injectError.kind(of: [0x65, 0x76, 0xff, 0x6e, 0x74]) == nil)
    }

    @Test func qdictOrderIsTheSortByBucketThenNewestFirst() {
        var generator = SystemRandomNumberGenerator()
        let alphabet = Array("abcdefghijklmnopqrstuvwxyz_-".utf8)
        for _ in 0..<300 {
            var section = ConfigSection(headerLine: 1)
            for line in 0..<Int.random(in: 0...12, using: &generator) {
                let key = (0..<Int.random(in: 1...4, using: &generator)).map { _ in alphabet.randomElement(using: &generator)! }
                section.put(ConfigEntry(key: key, value: [UInt8(line)], line: line + 2, form: .quoted, isPiece: false))
            }
            // The order as it was computed before (a sort of the enumerated entries).
            let reference = section.entries.enumerated()
                .sorted { a, b in
                    let (bucketA, bucketB) = (qdictBucket(a.element.key), qdictBucket(b.element.key))
                    return bucketA != bucketB ? bucketA < bucketB : a.offset > b.offset
                }
                .map(\.element)
            let order = section.qdictOrder
            #expect(order.map(\.key) == reference.map(\.key))
            #expect(order.map(\.value) == reference.map(\.value))
        }
    }

    @Test func commandLineArgumentsAreWhatNulBytesSeparate() {
        let samples: [[UInt8]] = [
            [], [0], [0, 0], Array("qemu-img\0convert\0-O\0qcow2\0".utf8), Array("a\0\0b".utf8),
            Array("/usr/bin/qemu-io".utf8), Array("x\0".utf8) + [0xff, 0xfe, 0] + Array("é".utf8),
        ]
        for bytes in samples {
            let expected = bytes.split(separator: 0, omittingEmptySubsequences: false).map { String(decoding: $0, as: UTF8.self) }
            let command = bytes.withUnsafeBufferPointer { ProgramCommand(commandLine: $0) }
            #expect(command.arguments == expected, "\(bytes)")
            #expect(command == ProgramCommand(arguments: expected))
        }
    }

    @Test func theProgramIsWhatFollowsTheLastSlash() {
        for (argument, program) in [("/usr/bin/qemu-img", "qemu-img"), ("qemu-io", "qemu-io"), ("", ""),
                                    ("dir/", ""), ("/", ""), ("a//b", "b"), ("./x/y/qemu-img-7", "qemu-img-7"),
                                    // A "/" with a combining mark is another character: no cut there.
                                    ("a/\u{301}b", "a/\u{301}b"), ("x/a/\u{301}b", "a/\u{301}b")] {
            #expect(ProgramCommand(arguments: [argument, "check"]).program == program, "\(argument)")
            let split = String(argument.split(separator: "/", omittingEmptySubsequences: false).last ?? "")
            #expect(split == program)
        }
        #expect(ProgramCommand(arguments: []).program == "")
    }
}
