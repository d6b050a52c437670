// RunDirectory: a finished run's outputs read back (report.html rebuilt, analyses recomputed).
import Core
import JobSchema
import Reporting
import Foundation

public struct RunDirectory: Sendable {
    public let url: URL

    public init(_ url: URL) {
        self.url = url.standardizedFileURL
    }

    public var reportJSON: URL { url.appendingPathComponent("report.json") }
    public var reportPage: URL { url.appendingPathComponent("report.html") }
    public var jobFile: URL { url.appendingPathComponent("job.yaml") }

    /// Where a task's vector and head live, relative to the run directory (as the manifest names them).
    public static func taskVectorPath(_ task: String) -> String { "task_vectors/\(task).safetensors" }
    public static func headPath(_ task: String) -> String { "heads/\(task).safetensors" }

    public func taskVector(_ task: String) -> URL {
        url.appendingPathComponent(Self.taskVectorPath(task))
    }

    public func head(_ task: String) -> URL {
        url.appendingPathComponent(Self.headPath(task))
    }

    public var base: URL { url.appendingPathComponent("base.safetensors") }

    /// The job that ran (the fully defaulted text the run saved), or nil when absent.
    public var jobText: String? {
        FileManager.default.contents(atPath: jobFile.path).flatMap { String(data: $0, encoding: .utf8) }
    }

    public func readReport() throws -> RunReport {
        guard FileManager.default.fileExists(atPath: reportJSON.path) else {
            throw OrthofuseError("\(url.path): no report.json (not a finished run directory)")
        }
        return try RunReport.read(reportJSON)
    }

    /// Rebuilds report.html (or `destination`) from report.json and job.yaml; returns where it went.
    @discardableResult
    public func writePage(to destination: URL? = nil) throws -> URL {
        let target = destination ?? reportPage
        try ReportPage.write(readReport(), jobText: jobText, to: target)
        return target
    }

    /// Recomputes the analyses of the saved task vectors (the tasks and layout of job.yaml),
    /// writes them into report.json and rebuilds report.html. Negation and ξ need the data and
    /// are kept as they were.
    @discardableResult
    public func reanalyze() throws -> TaskVectorAnalysis {
        var report = try readReport()
        guard let text = jobText else { throw OrthofuseError("\(jobFile.path): missing; it names the tasks and the model") }
        let plan = try JobPlan(config: JobConfig.parse(text, origin: jobFile.path, baseDirectory: url))
        let layout = plan.model.layout
        let names = plan.tasks.map(\.name)
        let vectors = try names.map { name -> FloatBuffer in
            let file = try Safetensors.read(taskVector(name))
            let vector = FloatBuffer(count: layout.totalCount)
            try layout.load(file, into: vector, origin: taskVector(name).path)
            return vector
        }
        let analysis = try TaskVectorAnalysis(tasks: names, taskVectors: vectors, layout: layout)
        analysis.fill(&report)
        try AtomicFile.write(report.encoded(), to: reportJSON)
        try ReportPage.write(report, jobText: text, to: reportPage)
        return analysis
    }
}
