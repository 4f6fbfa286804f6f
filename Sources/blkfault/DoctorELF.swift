import CLibElf
import Foundation

/// What `blkfault doctor` needs from one ELF file, read with libelf.
struct ELFFile {
    var path: String
    /// ELFCLASS32 / ELFCLASS64 and e_machine: a library of another kind is skipped by the loader.
    var elfClass: Int32
    var machine: UInt16
    var type: UInt16
    /// PT_INTERP, the dynamic loader; nil for a static executable.
    var interpreter: String?
    var hasDynamic: Bool
    var soname: String?
    var needed: [String] = []
    var rpath: [String] = []
    var runpath: [String] = []
    /// Undefined symbols of the dynamic symbol table: what it imports from other objects.
    var imports: [String] = []
    /// Defined, exported functions (for libraries: what they offer, e.g. libaio's io_submit).
    var exports: Set<String> = []
}

enum ELFError: Error, CustomStringConvertible {
    case cannotOpen(String, String)
    case notELF(String)
    case malformed(String, String)

    var description: String {
        switch self {
        case .cannotOpen(let p, let why): return "\(p): cannot open: \(why)"
        case .notELF(let p): return "\(p): not an ELF file"
        case .malformed(let p, let why): return "\(p): unreadable ELF: \(why)"
        }
    }
}

extension ELFFile {
    /// The class and machine of an ELF file from its first 20 bytes (no libelf), or nil.
    static func kind(of path: String) -> (elfClass: Int32, machine: UInt16)? {
        guard let h = FileHandle(forReadingAtPath: path) else { return nil }
        defer { try? h.close() }
        guard let d = try? h.read(upToCount: 20), d.count == 20,
              d[0] == 0x7f, d[1] == 0x45, d[2] == 0x4c, d[3] == 0x46 else { return nil }
        let machine = d[5] == 2 ? UInt16(d[18]) << 8 | UInt16(d[19]) : UInt16(d[19]) << 8 | UInt16(d[18])
        return (Int32(d[4]), machine)
    }

    static func read(_ path: String) throws(ELFError) -> ELFFile {
        _ = elf_version(blkfault_elf_version_current())
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw .cannotOpen(path, String(cString: strerror(errno))) }
        defer { close(fd) }
        guard let elf = elf_begin(fd, ELF_C_READ, nil) else { throw .notELF(path) }
        defer { elf_end(elf) }
        guard elf_kind(elf) == ELF_K_ELF else { throw .notELF(path) }
        var ehdr = GElf_Ehdr()
        guard gelf_getehdr(elf, &ehdr) != nil else { throw .malformed(path, String(cString: elf_errmsg(-1))) }

        var file = ELFFile(path: path, elfClass: gelf_getclass(elf), machine: ehdr.e_machine, type: ehdr.e_type,
                           interpreter: nil, hasDynamic: false)
        var phnum = 0
        if elf_getphdrnum(elf, &phnum) == 0 {
            for i in 0..<phnum {
                var ph = GElf_Phdr()
                guard gelf_getphdr(elf, Int32(i), &ph) != nil else { continue }
                if ph.p_type == UInt32(PT_INTERP) {
                    file.interpreter = interpreterPath(fd: fd, offset: ph.p_offset, size: ph.p_filesz)
                } else if ph.p_type == UInt32(PT_DYNAMIC) {
                    file.hasDynamic = true
                }
            }
        }

        var section = elf_nextscn(elf, nil)
        while let scn = section {
            defer { section = elf_nextscn(elf, scn) }
            var sh = GElf_Shdr()
            guard gelf_getshdr(scn, &sh) != nil, sh.sh_entsize > 0, let data = elf_getdata(scn, nil) else { continue }
            let count = Int(sh.sh_size / sh.sh_entsize)
            let strings = Int(sh.sh_link)
            func string(_ offset: UInt64) -> String? {
                guard let p = elf_strptr(elf, strings, Int(offset)) else { return nil }
                return String(cString: p)
            }
            if sh.sh_type == UInt32(SHT_DYNAMIC) {
                for i in 0..<count {
                    var dyn = GElf_Dyn()
                    guard gelf_getdyn(data, Int32(i), &dyn) != nil else { continue }
                    let value = dyn.d_un.d_val
                    switch dyn.d_tag {
                    case Int64(DT_NEEDED): if let s = string(value) { file.needed.append(s) }
                    case Int64(DT_SONAME): file.soname = string(value)
                    case Int64(DT_RPATH): if let s = string(value) { file.rpath += s.split(separator: ":").map(String.init) }
                    case Int64(DT_RUNPATH): if let s = string(value) { file.runpath += s.split(separator: ":").map(String.init) }
                    default: break
                    }
                }
            } else if sh.sh_type == UInt32(SHT_DYNSYM) {
                for i in 0..<count {
                    var sym = GElf_Sym()
                    guard gelf_getsym(data, Int32(i), &sym) != nil, sym.st_name != 0,
                          let name = string(UInt64(sym.st_name)) else { continue }
                    let bind = blkfault_elf_st_bind(sym.st_info)
                    guard bind == UInt32(STB_GLOBAL) || bind == UInt32(STB_WEAK) else { continue }
                    if sym.st_shndx == UInt16(SHN_UNDEF) {
                        file.imports.append(name)
                    } else if blkfault_elf_st_type(sym.st_info) == UInt32(STT_FUNC) {
                        file.exports.insert(name)
                    }
                }
            }
        }
        return file
    }

    private static func interpreterPath(fd: Int32, offset: UInt64, size: UInt64) -> String? {
        guard size > 0, size < 4096 else { return nil }
        var buffer = [UInt8](repeating: 0, count: Int(size))
        let n = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress, Int(size), off_t(offset)) }
        guard n > 0 else { return nil }
        return String(decoding: buffer[0..<n].prefix { $0 != 0 }, as: UTF8.self)
    }
}
