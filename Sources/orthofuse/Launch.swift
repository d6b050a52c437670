// Launch: starting a job on this process's rank(s), and turning failures into one line + exit code.
import Coordinator
import Core
import Foundation
import MPITransport
import Transport

enum JobSource {
    case file(URL)
    case text(String, origin: String, baseDirectory: URL)
}

enum Launch {
    /// True when started by mpirun/srun (OpenMPI or PMIx set these before exec).
    static var launchedByMPI: Bool {
        let environment = ProcessInfo.processInfo.environment
        return environment["OMPI_COMM_WORLD_SIZE"] != nil || environment["PMIX_RANK"] != nil
            || environment["PMI_RANK"] != nil
    }

    /// MPI when launched by mpirun; otherwise a single in-process rank (no MPI singleton start-up).
    static func makeCommunicator() throws -> any Communicator {
        if launchedByMPI {
            return try MPIEnvironment.initialize()
        }
        return InProcessWorld(size: 1).communicator(rank: 0)
    }

    static func finish(_ communicator: any Communicator) {
        if communicator is MPICommunicator {
            try? MPIEnvironment.finalize()
        }
    }

    /// Rank 0 reads and checks the job, then every rank receives its text, so all ranks run
    /// exactly the same plan and a bad job is one error line from rank 0.
    static func runJob(source: JobSource, level: Console.Level) throws {
        let communicator: any Communicator
        do {
            communicator = try makeCommunicator()
        } catch {
            throw CleanExit.message("cannot start MPI: \(error)")
        }
        let console = Console(rank: communicator.rank, size: communicator.size,
                              level: communicator.rank == 0 ? level : min(level, .normal))
        do {
            let plan = try distributeJob(source: source, communicator: communicator)
            try JobRunner(plan: plan, communicator: communicator, console: console).run()
            finish(communicator)
        } catch let error as PeerFailure {
            _ = error
            finish(communicator)
            Foundation.exit(1)
        } catch {
            if communicator.rank == 0 { Console.error("\(error)") }
            finish(communicator)
            Foundation.exit(1)
        }
    }

    private static func distributeJob(source: JobSource, communicator: any Communicator) throws -> JobPlan {
        // Message: "ok\0<base directory>\0<origin>\0<yaml>" or "error\0<message>".
        var message: [UInt8] = []
        if communicator.rank == 0 {
            do {
                let (text, origin, baseDirectory) = try read(source)
                let config = try JobConfig.parse(text, origin: origin, baseDirectory: baseDirectory)
                try config.checkFiles()
                _ = try JobPlan(config: config)
                message = Array("ok\0\(baseDirectory.path)\0\(origin)\0\(text)".utf8)
            } catch {
                message = Array("error\0\(error)".utf8)
            }
        }
        message = try communicator.broadcast(message, root: 0)
        let parts = String(decoding: message, as: UTF8.self).split(separator: "\0", maxSplits: 3, omittingEmptySubsequences: false)
        if parts.first == "error" {
            if communicator.rank == 0 { throw OrthofuseError(String(parts.dropFirst().joined(separator: "\0"))) }
            throw PeerFailure()
        }
        guard parts.count == 4 else { throw OrthofuseError("malformed job announcement from rank 0") }
        let config = try JobConfig.parse(String(parts[3]), origin: String(parts[2]),
                                         baseDirectory: URL(fileURLWithPath: String(parts[1])))
        return try JobPlan(config: config)
    }

    private static func read(_ source: JobSource) throws -> (String, String, URL) {
        switch source {
        case let .file(url):
            guard let data = FileManager.default.contents(atPath: url.path) else {
                throw OrthofuseError("\(url.path): cannot read the job file (missing or unreadable)")
            }
            guard let text = String(data: data, encoding: .utf8) else {
                throw OrthofuseError("\(url.path): the job file is not UTF-8 text")
            }
            return (text, url.lastPathComponent, url.deletingLastPathComponent().standardizedFileURL)
        case let .text(text, origin, baseDirectory):
            return (text, origin, baseDirectory)
        }
    }
}

enum CleanExit: Error, CustomStringConvertible {
    case message(String)
    var description: String {
        switch self {
        case let .message(text): return text
        }
    }
}
