import Foundation

/// One shared object the dynamic loader would load for a program.
struct LoadedObject {
    var name: String
    /// Where it was found, or nil (the loader would refuse to start the program).
    var path: String?
    /// Which object's DT_NEEDED asked for it first.
    var neededBy: String
    var elf: ELFFile?
}

/// Resolves DT_NEEDED the way glibc's ld.so does (without running it): breadth-first,
/// each name once; a name with a slash is a path; otherwise DT_RPATH of the loading
/// object and its loaders (only when it has no DT_RUNPATH), LD_LIBRARY_PATH,
/// DT_RUNPATH of the loading object, /etc/ld.so.cache, then the default directories.
/// $ORIGIN, $LIB and $PLATFORM are expanded. A candidate of another ELF class or
/// machine is skipped, as ld.so does.
struct Loader {
    var libraryPath: [String]
    var cache: [String: [String]]
    var defaultDirectories: [String]
    /// Secure mode (setuid/setgid/capabilities): LD_LIBRARY_PATH is ignored.
    var secure = false

    init(environment: [String: String] = ProcessInfo.processInfo.environment) {
        libraryPath = (environment["LD_LIBRARY_PATH"] ?? "").split(separator: ":", omittingEmptySubsequences: false)
            .map { $0.isEmpty ? "." : String($0) }
        if environment["LD_LIBRARY_PATH"]?.isEmpty ?? true { libraryPath = [] }
        cache = LdSoCache.read()
        let triplet = Loader.multiarchTriplet
        defaultDirectories = ["/lib/\(triplet)", "/usr/lib/\(triplet)", "/lib64", "/usr/lib64", "/lib", "/usr/lib"]
    }

    static var machineName: String {
        var u = utsname()
        uname(&u)
        return withUnsafeBytes(of: &u.machine) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
    }

    /// Debian's multiarch directory name, which is also what its ld.so puts in $LIB.
    static var multiarchTriplet: String {
        switch machineName {
        case "x86_64": return "x86_64-linux-gnu"
        case "aarch64": return "aarch64-linux-gnu"
        case "ppc64le": return "powerpc64le-linux-gnu"
        case "s390x": return "s390x-linux-gnu"
        case let m: return "\(m)-linux-gnu"
        }
    }

    func expand(_ dir: String, origin: String) -> String {
        var d = dir
        for (token, value) in [("ORIGIN", origin), ("LIB", "lib/\(Loader.multiarchTriplet)"), ("PLATFORM", Loader.machineName)] {
            d = d.replacingOccurrences(of: "${\(token)}", with: value).replacingOccurrences(of: "$\(token)", with: value)
        }
        return d
    }

    /// The directory an object was loaded from, for $ORIGIN.
    static func origin(of path: String) -> String {
        let resolved = (path as NSString).resolvingSymlinksInPath
        return (resolved as NSString).deletingLastPathComponent
    }

    func fits(_ path: String, _ program: ELFFile) -> Bool {
        guard Paths.isFile(path), let k = ELFFile.kind(of: path) else { return false }
        return k.elfClass == program.elfClass && k.machine == program.machine
    }

    /// Every object the loader would load for `program`, in load order.
    func load(_ program: ELFFile) -> [LoadedObject] {
        var out: [LoadedObject] = []
        var seen = Set<String>()
        // (object, the chain of objects that loaded it, for DT_RPATH)
        var queue: [(ELFFile, [ELFFile])] = [(program, [])]
        var head = 0
        while head < queue.count {
            let (object, loaders) = queue[head]
            head += 1
            for name in object.needed where !seen.contains(name) {
                seen.insert(name)
                let path = find(name, for: object, loaders: loaders, program: program)
                var elf: ELFFile? = nil
                if let path { elf = try? ELFFile.read(path) }
                if let soname = elf?.soname { seen.insert(soname) }
                out.append(LoadedObject(name: name, path: path, neededBy: object.path, elf: elf))
                if let elf { queue.append((elf, loaders + [object])) }
            }
        }
        return out
    }

    func find(_ name: String, for object: ELFFile, loaders: [ELFFile], program: ELFFile) -> String? {
        if name.contains("/") {
            let p = expand(name, origin: Loader.origin(of: object.path))
            return fits(p, program) ? p : nil
        }
        var dirs: [String] = []
        if object.runpath.isEmpty {
            for o in [object] + loaders.reversed() {
                dirs += o.rpath.map { expand($0, origin: Loader.origin(of: o.path)) }
            }
        }
        if !secure { dirs += libraryPath }
        dirs += object.runpath.map { expand($0, origin: Loader.origin(of: object.path)) }
        for d in dirs {
            let p = (d as NSString).appendingPathComponent(name)
            if fits(p, program) { return p }
        }
        for p in cache[name] ?? [] where fits(p, program) { return p }
        for d in defaultDirectories {
            let p = d + "/" + name
            if fits(p, program) { return p }
        }
        return nil
    }
}

/// /etc/ld.so.cache (glibc's "glibc-ld.so.cache1.1" format, optionally after the old
/// "ld.so-1.7.0" table): library name to paths, in the cache's order.
enum LdSoCache {
    static func read(path: String = "/etc/ld.so.cache") -> [String: [String]] {
        guard let data = FileManager.default.contents(atPath: path) else { return [:] }
        return parse([UInt8](data))
    }

    static func parse(_ b: [UInt8]) -> [String: [String]] {
        func u32(_ at: Int) -> Int? {
            guard at >= 0, at + 4 <= b.count else { return nil }
            return Int(b[at]) | Int(b[at + 1]) << 8 | Int(b[at + 2]) << 16 | Int(b[at + 3]) << 24
        }
        func starts(_ magic: String, at: Int) -> Bool {
            let m = Array(magic.utf8)
            return at + m.count <= b.count && Array(b[at..<at + m.count]) == m
        }
        var base = 0
        if starts("ld.so-1.7.0", at: 0) {
            // Old header (12 bytes + count), 12-byte entries, then the new table 8-aligned.
            guard let n = u32(12) else { return [:] }
            base = (16 + n * 12 + 7) & ~7
        }
        guard starts("glibc-ld.so.cache1.1", at: base), let count = u32(base + 20) else { return [:] }
        func string(_ offset: Int) -> String? {
            let start = base + offset
            guard start >= 0, start < b.count else { return nil }
            let end = b[start...].firstIndex(of: 0) ?? b.count
            return String(decoding: b[start..<end], as: UTF8.self)
        }
        var out: [String: [String]] = [:]
        let entries = base + 48
        for i in 0..<count {
            let e = entries + i * 24
            guard let key = u32(e + 4), let value = u32(e + 8), let k = string(key), let v = string(value) else { break }
            out[k, default: []].append(v)
        }
        return out
    }
}
