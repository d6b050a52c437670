// MergeBench: `orthofuse bench merge`: peak memory and throughput of sharded vs all-gather merging.
//
// Under mpirun, one variant and method per run, since VmHWM is a per-process peak. Task t belongs
// to rank t mod R, which generates τt from the seed (no files). The timed part starts once every
// rank holds its own task vectors and ends when every rank holds Δ:
// - allgather: step 5 and 7 as a run without sharding does them: an allGather of each rank's
//   task vectors, then every rank merges all of them (TaskVectorMerger);
// - sharded: the allToAll exchange of slices, the sliced merge, the gather of Δ (ShardedMerge).
// scripts/bench_merge.sh runs the grid and prints the table.
import Coordinator
import Core
import Foundation
import MPITransport
import Transport

public enum MergeBench {
    public struct Options: Sendable {
        public var sharded: Bool
        public var method: MergeMethodName
        public var taskCount: Int
        public var parameters: Int
        public var seed: UInt64

        public init(sharded: Bool, method: MergeMethodName, taskCount: Int, parameters: Int, seed: UInt64) {
            self.sharded = sharded
            self.method = method
            self.taskCount = taskCount
            self.parameters = parameters
            self.seed = seed
        }
    }

    /// Runs one measurement on this process's rank; rank 0 prints the figures.
    public static func run(_ options: Options) throws {
        let variant = options.sharded ? "sharded" : "allgather"
        let method = options.method, taskCount = options.taskCount, parameters = options.parameters, seed = options.seed
        let underMPI = MPIEnvironment.launchedByLauncher
        let communicator: any Communicator = underMPI ? try MPIEnvironment.initialize() : InProcessWorld(size: 1).communicator(rank: 0)
        defer { if underMPI { try? MPIEnvironment.finalize() } }
        let rank = communicator.rank, size = communicator.size

        let layout = benchLayout(parameters: parameters)
        let settings = MergeSettings(method: method)
        let assignment = (0..<taskCount).map { $0 % size }
        var own: [Int: FloatBuffer] = [:]
        for task in assignment.indices where assignment[task] == rank {
            own[task] = syntheticTaskVector(task: task, count: layout.totalCount, seed: seed)
        }
        let residentBefore = ProcessMemory.peakResidentBytes()

        try communicator.barrier()
        let started = Date()
        var phases: [Double] = []  // seconds: exchange or gather, merge (+ gather of Δ when sharded)
        let delta: FloatBuffer
        if options.sharded {
            let partition = ShardPartition.forMerging([settings], layout: layout, ranks: size)
            let shards = try TaskVectorShards.exchange(own: own, assignment: assignment, layout: layout,
                                                       partition: partition, communicator: communicator)
            phases.append(Date().timeIntervalSince(started))
            delta = try shards.mergedTaskVector(settings, communicator: communicator)
        } else {
            let taskVectors = try allGatherTaskVectors(own, assignment: assignment, count: layout.totalCount,
                                                       communicator: communicator)
            phases.append(Date().timeIntervalSince(started))
            delta = try TaskVectorMerger.mergedTaskVector(taskVectors, layout: layout, settings: settings)
        }
        phases.append(Date().timeIntervalSince(started) - phases[0])
        try communicator.barrier()
        let seconds = Date().timeIntervalSince(started)

        // Per-rank figures, each in its own slot, summed; the slowest rank's phases.
        var slots = [Double](repeating: 0, count: 2 * size)
        slots[rank] = Double(residentBefore)
        slots[size + rank] = Double(ProcessMemory.peakResidentBytes())
        let resident = try communicator.allReduce(slots, .sum)
        let slowest = try communicator.allReduce(phases, .max)
        guard rank == 0 else { return }
        let bytes = Double(taskCount * layout.totalCount * MemoryLayout<Float>.size)
        let mib = { (value: Double) in value / Double(1 << 20) }
        print(String(format: "merge %@ %@: np %d, T %d, P %d (%.2f GB of task vectors)", variant, method.rawValue,
                     size, taskCount, layout.totalCount, bytes / 1e9))
        print(String(format: "  time %.2f s (%@ %.2f s, merge%@ %.2f s), throughput %.2f GB/s", seconds,
                     options.sharded ? "exchange" : "allGather", slowest[0],
                     options.sharded ? " + gather of Δ" : "", slowest[1], bytes / 1e9 / seconds))
        for r in 0..<size {
            print(String(format: "  rank %d: VmHWM %.0f MiB (%.0f MiB holding its own task vectors)", r,
                         mib(resident[size + r]), mib(resident[r])))
        }
        print(String(format: "  Δ checksum %016llx", checksum(delta)))
    }

    /// Square 1024×1024 matrices, each with a bias, until there are at least `parameters` entries.
    static func benchLayout(parameters: Int) -> ParameterLayout {
        let width = 1024
        let layers = max(1, (parameters + width * width + width - 1) / (width * width + width))
        return ParameterLayout((0..<layers).flatMap { layer in
            [ParameterSpec(name: "layers.\(layer).weight", shape: [width, width]),
             ParameterSpec(name: "layers.\(layer).bias", shape: [width])]
        })
    }

    /// Uniform entries of a task-dependent scale, from a counter-based stream (fast, and the
    /// same whichever rank draws them).
    static func syntheticTaskVector(task: Int, count: Int, seed: UInt64) -> FloatBuffer {
        let vector = FloatBuffer(count: count)
        let random = CounterRandom(seed: seed, label: "bench/task \(task)")
        let scale = 1e-3 * Double(1 + task % 3)
        for i in 0..<count { vector[i] = Float((2 * random.uniform(at: i) - 1) * scale) }
        return vector
    }

    /// Step 5's all-gather path (as JobRunner.gather): one buffer of every rank's task vectors in
    /// rank order, each rank's own copied in, the rest received in place, handed out as views.
    static func allGatherTaskVectors(_ own: [Int: FloatBuffer], assignment: [Int], count: Int,
                                     communicator: any Communicator) throws -> [FloatBuffer] {
        var starts = [Int](repeating: 0, count: assignment.count)
        var counts = [Int](repeating: 0, count: communicator.size)
        for (task, owner) in assignment.enumerated() {
            starts[task] = counts[owner]
            counts[owner] += count
        }
        let blockStarts = BlockLayout.offsets(counts)
        for task in assignment.indices { starts[task] += blockStarts[assignment[task]] }
        let gathered = FloatBuffer(uninitializedCount: counts.reduce(0, +), hugePages: true)
        for (task, vector) in own { (gathered.pointer + starts[task]).update(from: vector.pointer, count: count) }
        try communicator.allGather(into: gathered.buffer, counts: counts)
        return assignment.indices.map { FloatBuffer(viewing: gathered, offset: starts[$0], count: count) }
    }

    /// FNV-1a over Δ's bits: the two variants must print the same.
    static func checksum(_ values: FloatBuffer) -> UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for i in 0..<values.count {
            hash ^= UInt64(values[i].bitPattern)
            hash = hash &* 0x0000_0100_0000_01b3
        }
        return hash
    }
}
