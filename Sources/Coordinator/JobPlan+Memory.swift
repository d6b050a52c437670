// JobPlan+Memory: the memory a job needs per rank, checked before anything is allocated, so that a
// model too large for the machine is one error line instead of a failed allocation mid-run.
import Core
import Transport
import Foundation

extension JobPlan {
    /// Copies of the parameter vector a rank holds: θ0, θ, its gradient, AdamW's two moments and
    /// a checkpoint being written (training); the gathered task vectors (all T, or a 1/R slice
    /// of each when merging is sharded), the merged Δ and θ0 + αΔ (merging). Activations and
    /// datasets are not counted: the datasets are checked when loaded.
    public func parameterCopiesPerRank(worldSize: Int) -> Double {
        let training = 6.0
        let taskVectors = shardsMerging(worldSize: worldSize) ? Double(tasks.count) / Double(worldSize) : Double(tasks.count)
        return training + taskVectors + 2
    }

    /// Throws when the estimate for the ranks on this host exceeds what the process may use.
    public func checkMemory(worldSize: Int) throws {
        let parameters = model.layout.totalCount
        let copies = parameterCopiesPerRank(worldSize: worldSize)
        let localRanks = LauncherEnvironment.ranksOnThisHost
        let perRank = Double(parameters) * copies * Double(MemoryLayout<Float>.size)
        let total = perRank * Double(max(1, localRanks))
        try MemoryBudget.check(total >= Double(Int.max) ? Int.max : Int(total),
                               for: "job '\(name)' (\(parameters) parameters × about \(Int(copies.rounded(.up))) copies per rank"
                                   + (localRanks > 1 ? " × \(localRanks) ranks on this host" : "")
                                   + ": weights, gradient, AdamW moments, the task vectors)")
    }
}
