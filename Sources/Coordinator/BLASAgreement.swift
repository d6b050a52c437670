// BLASAgreement: every rank's OpenBLAS kernel family, gathered when a job starts. GEMMs of two
// families round differently, so task vectors are the same bits whichever rank trains a task only
// when every rank runs one family; a job on mixed CPUs still runs, and its log says how to fix it.
import Core
import Foundation
import Transport

enum BLASAgreement {
    struct Rank: Equatable {
        var host: String
        var core: String
    }

    /// Longest name carried per field (host names are cut there).
    private static let fieldBytes = 64

    /// Every rank's host and kernel family, by rank (a collective: every rank calls it).
    static func gather(_ communicator: any Communicator, core: String = BLASRuntime.coreName,
                       host: String = ProcessInfo.processInfo.hostName) throws -> [Rank] {
        try communicator.allGather(encode(core) + encode(host)).map { block in
            Rank(host: decode(block[fieldBytes...]), core: decode(block[..<fieldBytes]))
        }
    }

    /// nil when every rank runs the same family; else one line naming each family with its ranks
    /// and the setting that makes them agree.
    static func disagreement(_ ranks: [Rank]) -> String? {
        let byFamily = families(ranks)
        guard byFamily.count > 1 else { return nil }
        let groups = byFamily.map { core, members in
            let hosts = Set(members.map { ranks[$0].host }).sorted().joined(separator: ", ")
            return "\(core) on rank(s) \(members.map(String.init).joined(separator: ", ")) (\(hosts))"
        }
        return "ranks run different OpenBLAS kernels: \(groups.joined(separator: "; ")); task vectors then "
            + "depend on which rank trains which task. For the same bits on any placement, export "
            + "OPENBLAS_CORETYPE to a family every CPU runs (Haswell for AVX2 and AVX-512 alike) before cluster/launch.sh"
    }

    /// report.json's `blas_core`: the family, or each family with its ranks when they differ.
    static func summary(_ ranks: [Rank]) -> String {
        let byFamily = families(ranks)
        guard byFamily.count > 1 else { return ranks.first?.core ?? BLASRuntime.coreName }
        return byFamily.map { "\($0.core) (rank \($0.ranks.map(String.init).joined(separator: ", ")))" }
            .joined(separator: ", ")
    }

    /// Each family with the ranks that run it, in the order of their lowest rank.
    private static func families(_ ranks: [Rank]) -> [(core: String, ranks: [Int])] {
        Dictionary(grouping: ranks.indices, by: { ranks[$0].core })
            .map { (core: $0.key, ranks: $0.value) }
            .sorted { $0.ranks[0] < $1.ranks[0] }
    }

    private static func encode(_ text: String) -> [Float] {
        let bytes = Array(text.utf8.prefix(fieldBytes))
        return bytes.map(Float.init) + [Float](repeating: 0, count: fieldBytes - bytes.count)
    }

    private static func decode(_ floats: ArraySlice<Float>) -> String {
        let bytes = floats.prefix { $0 != 0 }.map { UInt8(clamping: Int($0)) }
        return String(decoding: bytes, as: UTF8.self)
    }
}
