// MPICommunicator: the Communicator protocol over MPI, and MPI start-up, shutdown and abort.
import CMPI
import Foundation
import MPIShim
import Transport

/// Process-wide MPI lifecycle. MPI is initialised with MPI_THREAD_FUNNELED: only the thread that
/// called `initialize()` may make MPI calls, so every MPICommunicator method must run on it.
public final class MPIEnvironment {
    private init() {}

    /// True when started by mpirun or srun (OpenMPI, PMIx and PMI set these before exec); the one
    /// test of it, so that every executable starts MPI in the same cases.
    public static var launchedByLauncher: Bool {
        let environment = ProcessInfo.processInfo.environment
        return environment["OMPI_COMM_WORLD_SIZE"] != nil || environment["PMIX_RANK"] != nil
            || environment["PMI_RANK"] != nil
    }

    /// This process's rank as the launcher set it, before MPI_Init; nil when not launched.
    public static var launcherRank: Int? {
        let environment = ProcessInfo.processInfo.environment
        return (environment["OMPI_COMM_WORLD_RANK"] ?? environment["PMIX_RANK"] ?? environment["PMI_RANK"]).flatMap { Int($0) }
    }

    /// Initialises MPI (or reuses an existing initialisation) and returns MPI_COMM_WORLD, set to
    /// return errors instead of aborting so they surface as thrown TransportErrors.
    /// Works under mpirun and as a singleton (size 1) without it.
    public static func initialize() throws -> MPICommunicator {
        var alreadyInitialized: Int32 = 0
        try check(MPI_Initialized(&alreadyInitialized), "MPI_Initialized")
        if alreadyInitialized == 0 {
            var provided: Int32 = 0
            // MPI's own error handler is not ours yet: a failing MPI_Init aborts inside the library.
            try check(MPI_Init_thread(nil, nil, ofmpi_thread_funneled(), &provided), "MPI_Init_thread")
        } else if isFinalized {
            throw TransportError("MPI was already finalized in this process; it cannot be initialized again")
        }
        guard let world = ofmpi_comm_world() else { throw TransportError("MPI_COMM_WORLD is null") }
        try check(MPI_Comm_set_errhandler(world, ofmpi_errors_return()), "MPI_Comm_set_errhandler")
        return try MPICommunicator(communicator: world)
    }

    /// Shuts MPI down; every rank must call it. Calling it again, or before initialize, does nothing.
    public static func finalize() throws {
        var initialized: Int32 = 0
        try check(MPI_Initialized(&initialized), "MPI_Initialized")
        guard initialized != 0, !isFinalized else { return }
        try check(MPI_Finalize(), "MPI_Finalize")
    }

    /// Terminates every rank of the job with `code` (mpirun reports it). Use when one rank fails
    /// and the others may be blocked in a call that would otherwise never return.
    public static func abort(code: Int32) -> Never {
        var initialized: Int32 = 0
        _ = MPI_Initialized(&initialized)
        if initialized != 0, !isFinalized {
            _ = MPI_Abort(ofmpi_comm_world(), code)
        }
        // MPI_Abort should not return; if it does (or MPI is not running), exit anyway.
        exit(code)
    }

    public static var isFinalized: Bool {
        var finalized: Int32 = 0
        _ = MPI_Finalized(&finalized)
        return finalized != 0
    }

    /// Turns an MPI return code into a TransportError carrying MPI_Error_string's text.
    static func check(_ code: Int32, _ call: @autoclosure () -> String) throws {
        guard code != ofmpi_success() else { return }
        throw TransportError("\(call()) failed: \(errorText(code)) (MPI error \(code))")
    }

    static func errorText(_ code: Int32) -> String {
        var buffer = [CChar](repeating: 0, count: 1024)  // ≥ MPI_MAX_ERROR_STRING (256 in OpenMPI)
        var length: Int32 = 0
        guard MPI_Error_string(code, &buffer, &length) == ofmpi_success() else { return "unknown MPI error" }
        let bytes = buffer.prefix(Int(max(0, min(length, Int32(buffer.count))))).map { UInt8(bitPattern: $0) }
        return String(decoding: bytes, as: UTF8.self)
    }
}

/// A Communicator over one MPI communicator (MPI_COMM_WORLD, or a group split from it).
///
/// MPI counts are Int32: broadcasts, all-reduces and all-gathers larger than `maxElementsPerCall`
/// elements are split into several MPI calls (all-to-alls at `allToAllStagingLimit` already); a
/// point-to-point message is limited to Int32.max bytes.
public final class MPICommunicator: Communicator, @unchecked Sendable {
    // @unchecked Sendable: the only non-Sendable field is the MPI_Comm handle (an OpaquePointer),
    // which is immutable here and only passed to MPI. MPI runs in FUNNELED mode, so calls must
    // come from the thread that initialised MPI; that is the caller's contract, not this type's.
    private let communicator: MPI_Comm
    /// Frees a communicator made by `split` once no MPICommunicator uses it; nil for MPI_COMM_WORLD.
    private let owner: SplitCommunicatorOwner?
    public let rank: Int
    public let size: Int
    /// The most elements passed to one MPI collective call (and, for all-gathers, per round across all ranks).
    public let maxElementsPerCall: Int

    init(communicator: MPI_Comm, owner: SplitCommunicatorOwner? = nil, maxElementsPerCall: Int = 1 << 30) throws {
        precondition(maxElementsPerCall >= 1 && maxElementsPerCall <= Int(Int32.max))
        self.communicator = communicator
        self.owner = owner
        var rank: Int32 = 0
        var size: Int32 = 0
        try MPIEnvironment.check(MPI_Comm_rank(communicator, &rank), "MPI_Comm_rank")
        try MPIEnvironment.check(MPI_Comm_size(communicator, &size), "MPI_Comm_size")
        self.rank = Int(rank)
        self.size = Int(size)
        self.maxElementsPerCall = maxElementsPerCall
    }

    /// The same communicator with a smaller per-call limit; lets tests exercise the chunked paths
    /// with small buffers.
    public func withMaxElementsPerCall(_ limit: Int) throws -> MPICommunicator {
        guard limit >= 1, limit <= Int(Int32.max) else {
            throw TransportError("maxElementsPerCall must be in 1...\(Int32.max), got \(limit)")
        }
        return try MPICommunicator(communicator: communicator, owner: owner, maxElementsPerCall: limit)
    }

    public func barrier() throws {
        try MPIEnvironment.check(MPI_Barrier(communicator), "MPI_Barrier")
    }

    public func broadcast(_ bytes: [UInt8], root: Int) throws -> [UInt8] {
        try checkRank(root, role: "root")
        // Non-root ranks do not know the length: send it first.
        var length = [Int64(rank == root ? bytes.count : 0)]
        try length.withUnsafeMutableBytes { buffer in
            try MPIEnvironment.check(
                MPI_Bcast(buffer.baseAddress, 1, ofmpi_int64(), Int32(root), communicator),
                "MPI_Bcast of the byte count")
        }
        var received = rank == root ? bytes : [UInt8](repeating: 0, count: Int(length[0]))
        try received.withUnsafeMutableBytes { buffer in
            try broadcastChunks(buffer.baseAddress, count: buffer.count, elementSize: 1,
                                datatype: ofmpi_byte(), root: root)
        }
        return received
    }

    public func broadcast(_ values: UnsafeMutableBufferPointer<Float>, root: Int) throws {
        try checkRank(root, role: "root")
        try requireSameCount(values.count, what: "float broadcast")
        try broadcastChunks(UnsafeMutableRawPointer(values.baseAddress), count: values.count,
                            elementSize: MemoryLayout<Float>.stride, datatype: ofmpi_float(), root: root)
    }

    /// The bare collective, for `orthofuse bench allgather`'s baseline: one MPI_Allgather of
    /// `send.count` bytes from every rank into `receive` (size × send.count bytes, rank order),
    /// no staging, no copies.
    public func rawAllGather(_ send: UnsafeRawBufferPointer, into receive: UnsafeMutableRawBufferPointer) throws {
        guard send.count <= Int(Int32.max), receive.count == send.count * size,
              let source = send.baseAddress, let target = receive.baseAddress else {
            throw TransportError("raw all-gather: \(send.count) bytes per rank into \(receive.count) (needs ≤ 2^31 − 1 per rank, \(size) × as many in all)")
        }
        try MPIEnvironment.check(
            MPI_Allgather(source, Int32(send.count), ofmpi_byte(), target, Int32(send.count), ofmpi_byte(), communicator),
            "MPI_Allgather of \(send.count) bytes")
    }

    public func allGather(_ block: [Float]) throws -> [[Float]] {
        var counts = [Int64](repeating: 0, count: size)
        var myCount = Int64(block.count)
        try counts.withUnsafeMutableBytes { countsBuffer in
            try MPIEnvironment.check(
                MPI_Allgather(&myCount, 1, ofmpi_int64(), countsBuffer.baseAddress, 1, ofmpi_int64(), communicator),
                "MPI_Allgather of block sizes")
        }
        let blockCounts = counts.map { Int($0) }
        var blocks = blockCounts.map { [Float](repeating: 0, count: $0) }

        // Rounds: in round k every rank contributes elements [k·share, (k+1)·share) of its block,
        // so one round's counts and displacements stay within maxElementsPerCall (≤ Int32.max).
        let share = max(1, maxElementsPerCall / size)
        let longest = blockCounts.max() ?? 0
        let roundCount = max(1, (longest + share - 1) / share)
        var staging: [Float] = []
        for round in 0..<roundCount {
            let start = round * share
            let roundCounts = blockCounts.map { max(0, min(share, $0 - start)) }
            var displacements = [Int32](repeating: 0, count: size)
            var total = 0
            for r in 0..<size {
                displacements[r] = Int32(total)
                total += roundCounts[r]
            }
            // One round usually holds everything; receive it straight into a staging buffer
            // sized for this round and copy each rank's slice out.
            if staging.count < total { staging = [Float](repeating: 0, count: total) }
            let sendCount = Int32(roundCounts[rank])
            let receiveCounts = roundCounts.map { Int32($0) }
            try block.withUnsafeBufferPointer { source in
                try staging.withUnsafeMutableBufferPointer { destination in
                    try withNonNullPointer(source.baseAddress.map { UnsafeRawPointer($0 + min(start, source.count)) }) { sendPointer in
                        try withNonNullPointer(UnsafeMutableRawPointer(destination.baseAddress)) { receivePointer in
                            try MPIEnvironment.check(
                                MPI_Allgatherv(sendPointer, sendCount, ofmpi_float(),
                                               receivePointer, receiveCounts, displacements, ofmpi_float(),
                                               communicator),
                                "MPI_Allgatherv (round \(round + 1) of \(roundCount), \(total) floats)")
                        }
                    }
                }
            }
            for r in 0..<size where roundCounts[r] > 0 {
                let offset = Int(displacements[r])
                blocks[r].withUnsafeMutableBufferPointer { target in
                    staging.withUnsafeBufferPointer { source in
                        (target.baseAddress! + start).update(from: source.baseAddress! + offset, count: roundCounts[r])
                    }
                }
            }
        }
        return blocks
    }

    /// MPI_Allgatherv in place when every displacement fits the Int32 counts (buffers up to
    /// `maxElementsPerCall`, 4 GiB of floats by default); larger ones as one chunked broadcast
    /// per rank, which needs no displacements. No staging, no copies: MPI receives straight
    /// into the caller's buffer.
    public func allGather(into buffer: UnsafeMutableBufferPointer<Float>, counts: [Int]) throws {
        // Every rank must pass the same valid counts, or MPI would misplace blocks or wait
        // forever: agreed in one all-reduce before any rank can throw, so all throw together.
        let offsets = try? BlockLayout.offsets(counts, total: buffer.count, ranks: size)
        let padded = (0..<size).map { Int64($0 < counts.count ? counts[$0] : -1) }
        var bounds = [Int64(offsets == nil ? 1 : 0)] + padded + padded.map { -$0 }
        try bounds.withUnsafeMutableBytes { raw in
            try MPIEnvironment.check(
                MPI_Allreduce(ofmpi_in_place(), raw.baseAddress, Int32(raw.count / MemoryLayout<Int64>.stride), ofmpi_int64(),
                              ofmpi_op_max(), communicator),
                "MPI_Allreduce of the all-gather block counts")
        }
        let agreed = bounds[0] == 0 && (0..<size).allSatisfy { bounds[1 + $0] == -bounds[1 + size + $0] }
        guard agreed, let offsets else {
            throw TransportError("allGather(into:): the ranks passed different or invalid block counts (this rank: \(counts) for a buffer of \(buffer.count))")
        }
        guard let base = buffer.baseAddress, buffer.count > 0 else { return }
        guard buffer.count <= maxElementsPerCall else {
            for r in 0..<size where counts[r] > 0 {
                try broadcast(UnsafeMutableBufferPointer(start: base + offsets[r], count: counts[r]), root: r)
            }
            return
        }
        let receiveCounts = counts.map { Int32($0) }
        let displacements = offsets.map { Int32($0) }
        try MPIEnvironment.check(
            MPI_Allgatherv(ofmpi_in_place(), 0, ofmpi_float(), base, receiveCounts, displacements, ofmpi_float(), communicator),
            "MPI_Allgatherv in place (\(buffer.count) floats)")
    }

    /// The most floats one all-to-all round stages each way (64 MiB): blocks are separate arrays,
    /// so MPI_Alltoallv needs them packed, and bounding the staging keeps a large exchange from
    /// costing a second copy of everything.
    public static let allToAllStagingLimit = 1 << 24

    public func allToAll(_ blocks: [[Float]]) throws -> [[Float]] {
        // Every rank learns together that one passed a wrong block count: MPI would hang or misread.
        var wrong = [Int64(blocks.count == size ? 0 : 1)]
        try wrong.withUnsafeMutableBytes { buffer in
            try MPIEnvironment.check(
                MPI_Allreduce(ofmpi_in_place(), buffer.baseAddress, 1, ofmpi_int64(), ofmpi_op_max(), communicator),
                "MPI_Allreduce of the allToAll block counts")
        }
        guard wrong[0] == 0 else {
            throw TransportError("allToAll: every rank must pass one block per rank (\(size)); this rank passed \(blocks.count)")
        }
        var sendCounts = blocks.map { Int64($0.count) }
        var receiveCounts = [Int64](repeating: 0, count: size)
        try sendCounts.withUnsafeMutableBytes { sendBuffer in
            try receiveCounts.withUnsafeMutableBytes { receiveBuffer in
                try MPIEnvironment.check(
                    MPI_Alltoall(sendBuffer.baseAddress, 1, ofmpi_int64(), receiveBuffer.baseAddress, 1, ofmpi_int64(),
                                 communicator),
                    "MPI_Alltoall of block sizes")
            }
        }
        let incoming = receiveCounts.map { Int($0) }
        var received = incoming.map { [Float](repeating: 0, count: $0) }

        // Rounds: in round k every pair exchanges elements [k·share, (k+1)·share) of its block, so
        // a round moves at most share·size floats each way and counts and displacements fit Int32.
        // The number of rounds follows the longest block anywhere, so every rank agrees on it.
        let limit = min(maxElementsPerCall, Self.allToAllStagingLimit)
        let share = max(1, limit / size)
        var longest = [Int64(max(blocks.map(\.count).max() ?? 0, incoming.max() ?? 0))]
        try longest.withUnsafeMutableBytes { buffer in
            try MPIEnvironment.check(
                MPI_Allreduce(ofmpi_in_place(), buffer.baseAddress, 1, ofmpi_int64(), ofmpi_op_max(), communicator),
                "MPI_Allreduce of the longest allToAll block")
        }
        let roundCount = max(1, (Int(longest[0]) + share - 1) / share)
        var sendStaging: [Float] = [0]
        var receiveStaging: [Float] = [0]
        for round in 0..<roundCount {
            let start = round * share
            let sendRound = blocks.map { max(0, min(share, $0.count - start)) }
            let receiveRound = incoming.map { max(0, min(share, $0 - start)) }
            let sendDisplacements = Self.displacements(sendRound)
            let receiveDisplacements = Self.displacements(receiveRound)
            let sendTotal = sendRound.reduce(0, +)
            let receiveTotal = receiveRound.reduce(0, +)
            if sendStaging.count < sendTotal { sendStaging = [Float](repeating: 0, count: sendTotal) }
            if receiveStaging.count < receiveTotal { receiveStaging = [Float](repeating: 0, count: receiveTotal) }
            sendStaging.withUnsafeMutableBufferPointer { staging in
                for destination in 0..<size where sendRound[destination] > 0 {
                    blocks[destination].withUnsafeBufferPointer { block in
                        (staging.baseAddress! + Int(sendDisplacements[destination]))
                            .update(from: block.baseAddress! + start, count: sendRound[destination])
                    }
                }
            }
            let sendCounts32 = sendRound.map { Int32($0) }
            let receiveCounts32 = receiveRound.map { Int32($0) }
            try sendStaging.withUnsafeBufferPointer { sendBuffer in
                try receiveStaging.withUnsafeMutableBufferPointer { receiveBuffer in
                    try MPIEnvironment.check(
                        MPI_Alltoallv(sendBuffer.baseAddress, sendCounts32, sendDisplacements, ofmpi_float(),
                                      receiveBuffer.baseAddress, receiveCounts32, receiveDisplacements, ofmpi_float(),
                                      communicator),
                        "MPI_Alltoallv (round \(round + 1) of \(roundCount), \(sendTotal) floats out, \(receiveTotal) in)")
                }
            }
            receiveStaging.withUnsafeBufferPointer { staging in
                for source in 0..<size where receiveRound[source] > 0 {
                    received[source].withUnsafeMutableBufferPointer { target in
                        (target.baseAddress! + start).update(from: staging.baseAddress! + Int(receiveDisplacements[source]),
                                                             count: receiveRound[source])
                    }
                }
            }
        }
        return received
    }

    /// Exclusive prefix sums: where each rank's part starts in a packed buffer.
    private static func displacements(_ counts: [Int]) -> [Int32] {
        var result = [Int32](repeating: 0, count: counts.count)
        var total = 0
        for (index, count) in counts.enumerated() {
            result[index] = Int32(total)
            total += count
        }
        return result
    }

    public func allReduce(_ values: [Double], _ operation: ReduceOperation) throws -> [Double] {
        try requireSameCount(values.count, what: "allReduce")
        let op: MPI_Op?
        switch operation {
        case .sum: op = ofmpi_op_sum()
        case .max: op = ofmpi_op_max()
        case .min: op = ofmpi_op_min()
        }
        var result = values
        try result.withUnsafeMutableBufferPointer { buffer in
            var start = 0
            while start < buffer.count {
                let count = min(maxElementsPerCall, buffer.count - start)
                try MPIEnvironment.check(
                    MPI_Allreduce(ofmpi_in_place(), buffer.baseAddress! + start, Int32(count),
                                  ofmpi_double(), op, communicator),
                    "MPI_Allreduce of \(count) doubles")
                start += count
            }
        }
        return result
    }

    public func send(_ bytes: [UInt8], to destination: Int, tag: Int) throws {
        try checkRank(destination, role: "destination")
        try checkTag(tag)
        guard bytes.count <= Int(Int32.max) else {
            throw TransportError("message of \(bytes.count) bytes exceeds MPI's Int32 count limit; split it")
        }
        try bytes.withUnsafeBytes { buffer in
            try withNonNullPointer(buffer.baseAddress) { pointer in
                try MPIEnvironment.check(
                    MPI_Send(pointer, Int32(buffer.count), ofmpi_byte(), Int32(destination), Int32(tag), communicator),
                    "MPI_Send of \(buffer.count) bytes to rank \(destination), tag \(tag)")
            }
        }
    }

    public func receive(from source: Int?, tag: Int) throws -> (source: Int, bytes: [UInt8]) {
        if let source { try checkRank(source, role: "source") }
        try checkTag(tag)
        // Probe first to learn the sender and the length; then receive exactly that message
        // (same source and tag, and MPI does not reorder messages between one pair).
        var status = MPI_Status()
        try MPIEnvironment.check(
            MPI_Probe(source.map { Int32($0) } ?? ofmpi_any_source(), Int32(tag), communicator, &status),
            "MPI_Probe for tag \(tag)")
        let sender = ofmpi_status_source(&status)
        var count: Int32 = 0
        try MPIEnvironment.check(MPI_Get_count(&status, ofmpi_byte(), &count), "MPI_Get_count")
        var bytes = [UInt8](repeating: 0, count: Int(count))
        try bytes.withUnsafeMutableBytes { buffer in
            try withNonNullPointer(buffer.baseAddress) { pointer in
                try MPIEnvironment.check(
                    MPI_Recv(pointer, count, ofmpi_byte(), sender, Int32(tag), communicator, &status),
                    "MPI_Recv of \(count) bytes from rank \(sender), tag \(tag)")
            }
        }
        return (Int(sender), bytes)
    }

    /// MPI_Iprobe. MPI keeps messages between one pair in order and only this thread receives,
    /// so the next receive with the returned source and tag gets the probed message.
    public func probe(from source: Int?, tag: Int) throws -> Int? {
        if let source { try checkRank(source, role: "source") }
        try checkTag(tag)
        var pending: Int32 = 0
        var status = MPI_Status()
        try MPIEnvironment.check(
            MPI_Iprobe(source.map { Int32($0) } ?? ofmpi_any_source(), Int32(tag), communicator, &pending, &status),
            "MPI_Iprobe for tag \(tag)")
        return pending != 0 ? Int(ofmpi_status_source(&status)) : nil
    }

    /// MPI_Iprobe with a growing pause between probes (50 µs doubling to 1 ms) up to `timeout`.
    /// Not MPI_Probe: it cannot time out (the heartbeat must), and OpenMPI's blocking calls spin
    /// a whole core, which a coordinator that does not train owes to the workers on its host.
    public func waitForMessage(tag: Int, timeout: Double) throws -> Int? {
        let deadline = Date(timeIntervalSinceNow: max(0, timeout))
        var pause = 50e-6
        while true {
            if let source = try probe(from: nil, tag: tag) { return source }
            let left = deadline.timeIntervalSinceNow
            if left <= 0 { return nil }
            Thread.sleep(forTimeInterval: min(pause, left))
            pause = min(pause * 2, 1e-3)
        }
    }

    /// MPI_Comm_split (nil color: MPI_UNDEFINED). The group's communicator keeps this one's
    /// `maxElementsPerCall` and error handling, and is freed when its last MPICommunicator goes.
    public func split(color: Int?, key: Int) throws -> (any Communicator)? {
        // Every rank learns together that one passed an unusable color or key: MPI would fail
        // on that rank alone and leave the others waiting in MPI_Comm_split.
        let valid = (color.map { (0...Int(Int32.max)).contains($0) } ?? true) && (Int(Int32.min)...Int(Int32.max)).contains(key)
        var invalid = [Int64(valid ? 0 : 1)]
        try invalid.withUnsafeMutableBytes { buffer in
            try MPIEnvironment.check(
                MPI_Allreduce(ofmpi_in_place(), buffer.baseAddress, 1, ofmpi_int64(), ofmpi_op_max(), communicator),
                "MPI_Allreduce of the split arguments' validity")
        }
        guard invalid[0] == 0 else {
            throw TransportError("split: colors must be in 0...\(Int32.max) (nil for no group) and keys fit Int32; this rank passed color \(color.map(String.init) ?? "nil"), key \(key)")
        }
        var group: MPI_Comm? = nil
        try MPIEnvironment.check(
            MPI_Comm_split(communicator, color.map { Int32($0) } ?? ofmpi_undefined(), Int32(key), &group),
            "MPI_Comm_split (color \(color.map(String.init) ?? "undefined"), key \(key))")
        guard let group, group != ofmpi_comm_null() else { return nil }
        let owner = SplitCommunicatorOwner(group)
        try MPIEnvironment.check(MPI_Comm_set_errhandler(group, ofmpi_errors_return()), "MPI_Comm_set_errhandler")
        return try MPICommunicator(communicator: group, owner: owner, maxElementsPerCall: maxElementsPerCall)
    }

    /// Never returns: MPI_Abort on MPI_COMM_WORLD ends every rank of the job (not only this
    /// communicator's group) with exit status `code`. Prints nothing; `message` is the caller's
    /// to report. Buffered standard output is flushed first so lines already printed survive.
    public func abort(code: Int32, message: String) throws {
        fflush(nil)
        MPIEnvironment.abort(code: code)
    }

    // MARK: - Helpers

    private func broadcastChunks(_ base: UnsafeMutableRawPointer?, count: Int, elementSize: Int,
                                 datatype: MPI_Datatype?, root: Int) throws {
        var start = 0
        while start < count {
            let chunk = min(maxElementsPerCall, count - start)
            try MPIEnvironment.check(
                MPI_Bcast(base! + start * elementSize, Int32(chunk), datatype, Int32(root), communicator),
                "MPI_Bcast of \(chunk) elements from rank \(root)")
            start += chunk
        }
    }

    /// Every rank throws together when the ranks pass different counts, instead of MPI
    /// truncating or hanging.
    private func requireSameCount(_ count: Int, what: String) throws {
        var bounds: [Int64] = [Int64(count), -Int64(count)]
        try bounds.withUnsafeMutableBytes { buffer in
            try MPIEnvironment.check(
                MPI_Allreduce(ofmpi_in_place(), buffer.baseAddress, 2, ofmpi_int64(), ofmpi_op_max(), communicator),
                "MPI_Allreduce of \(what) counts")
        }
        let largest = bounds[0]
        let smallest = -bounds[1]
        guard largest == smallest else {
            throw TransportError("\(what): ranks passed different counts (from \(smallest) to \(largest)); this rank passed \(count)")
        }
    }

    private func checkRank(_ other: Int, role: String) throws {
        guard (0..<size).contains(other) else { throw TransportError("\(role) rank \(other) outside 0..<\(size)") }
    }

    private func checkTag(_ tag: Int) throws {
        guard tag >= 0, tag <= Int(Int32.max) else { throw TransportError("tag must be in 0...\(Int32.max), got \(tag)") }
    }
}

/// Owns a communicator created by MPI_Comm_split and frees it when the last MPICommunicator
/// using it goes away. Not after MPI_Finalize, which has released it already; like every MPI
/// call, the last release must happen on the thread that initialised MPI.
final class SplitCommunicatorOwner: @unchecked Sendable {
    // @unchecked Sendable: the handle is immutable and only passed to MPI.
    private let communicator: MPI_Comm

    init(_ communicator: MPI_Comm) { self.communicator = communicator }

    deinit {
        var initialized: Int32 = 0
        _ = MPI_Initialized(&initialized)
        guard initialized != 0, !MPIEnvironment.isFinalized else { return }
        var handle: MPI_Comm? = communicator
        _ = MPI_Comm_free(&handle)
    }
}

/// Empty Swift buffers may have no address; MPI wants a valid pointer even for zero counts.
private func withNonNullPointer<Result>(
    _ pointer: UnsafeRawPointer?, _ body: (UnsafeRawPointer) throws -> Result
) rethrows -> Result {
    if let pointer { return try body(pointer) }
    var placeholder: UInt8 = 0
    return try withUnsafePointer(to: &placeholder) { try body(UnsafeRawPointer($0)) }
}

private func withNonNullPointer<Result>(
    _ pointer: UnsafeMutableRawPointer?, _ body: (UnsafeMutableRawPointer) throws -> Result
) rethrows -> Result {
    if let pointer { return try body(pointer) }
    var placeholder: UInt8 = 0
    return try withUnsafeMutablePointer(to: &placeholder) { try body(UnsafeMutableRawPointer($0)) }
}
