// AllGatherBench: `orthofuse bench allgather`: the task-vector exchange of a run without sharding
// (step 5: each rank's task vectors in one block, Communicator.allGather, split per task) against
// one bare MPI_Allgather of the same bytes into buffers made beforehand, in the same process.
import Core
import Foundation
import MPITransport
import Transport

public enum AllGatherBench {
    public struct Result: Sendable {
        public var ranks: Int
        public var taskCount: Int
        public var parameters: Int
        /// Bytes every rank holds at the end: all T task vectors.
        public var bytes: Int
        public var exchangeSeconds: Double
        public var rawSeconds: Double

        public var jsonLine: String {
            String(format: #"{"bench": "allgather", "ranks": %d, "tasks": %d, "parameters": %d, "gigabytes": %.4f, "exchange_seconds": %.4f, "exchange_gb_per_s": %.3f, "raw_allgather_seconds": %.4f, "raw_allgather_gb_per_s": %.3f, "exchange_over_raw": %.2f}"#,
                   ranks, taskCount, parameters, Double(bytes) / 1e9, exchangeSeconds, Double(bytes) / 1e9 / exchangeSeconds,
                   rawSeconds, Double(bytes) / 1e9 / rawSeconds, exchangeSeconds / rawSeconds)
        }
    }

    /// Under mpirun (T a multiple of the ranks, so every rank sends as many bytes): the best of
    /// `repeats` timings of each, between barriers. Returns the result on rank 0, nil elsewhere.
    public static func run(taskCount: Int, parameters: Int, repeats: Int, seed: UInt64) throws -> Result? {
        guard MPIEnvironment.launchedByLauncher else {
            throw OrthofuseError("bench allgather: run it under mpirun (cluster/launch.sh -np 2 -- orthofuse bench allgather)")
        }
        let communicator = try MPIEnvironment.initialize()
        defer { try? MPIEnvironment.finalize() }
        let rank = communicator.rank, size = communicator.size
        guard taskCount % size == 0 else {
            throw OrthofuseError("bench allgather: --tasks \(taskCount) is not a multiple of the \(size) ranks")
        }
        let assignment = (0..<taskCount).map { $0 % size }
        var own: [Int: FloatBuffer] = [:]
        for task in assignment.indices where assignment[task] == rank {
            own[task] = MergeBench.syntheticTaskVector(task: task, count: parameters, seed: seed)
        }
        let exchange = try best(of: repeats, communicator) {
            _ = try MergeBench.allGatherTaskVectors(own, assignment: assignment, count: parameters, communicator: communicator)
        }
        let blockBytes = taskCount / size * parameters * MemoryLayout<Float>.stride
        let send = UnsafeMutableRawBufferPointer.allocate(byteCount: blockBytes, alignment: 64)
        let receive = UnsafeMutableRawBufferPointer.allocate(byteCount: blockBytes * size, alignment: 64)
        defer { send.deallocate(); receive.deallocate() }
        var offset = 0
        for task in own.keys.sorted() {
            (send.baseAddress! + offset).copyMemory(from: own[task]!.pointer, byteCount: parameters * MemoryLayout<Float>.stride)
            offset += parameters * MemoryLayout<Float>.stride
        }
        receive.initializeMemory(as: UInt8.self, repeating: 0)  // the pages exist before timing
        let raw = try best(of: repeats, communicator) { try communicator.rawAllGather(UnsafeRawBufferPointer(send), into: receive) }
        guard rank == 0 else { return nil }
        return Result(ranks: size, taskCount: taskCount, parameters: parameters,
                      bytes: taskCount * parameters * MemoryLayout<Float>.stride, exchangeSeconds: exchange, rawSeconds: raw)
    }

    /// The slowest rank's time of `body`, best over `repeats` runs.
    private static func best(of repeats: Int, _ communicator: any Communicator, _ body: () throws -> Void) throws -> Double {
        var best = Double.infinity
        for _ in 0..<max(1, repeats) {
            try communicator.barrier()
            let started = Date()
            try body()
            let slowest = try communicator.allReduce([Date().timeIntervalSince(started)], .max)[0]
            best = min(best, slowest)
        }
        return best
    }
}
