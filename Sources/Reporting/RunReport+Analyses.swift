// RunReport+Analyses: how the analyses and the merge settings are written into report.json's fields.
import Core
import JobSchema

extension TaskVectorAnalysis {
    /// Writes the analyses into the report's fields.
    public func fill(_ report: inout RunReport) {
        report.cosineSimilarity = TaskMatrix(tasks: tasks, matrix: cosine)
        report.cosineSimilarityPerLayer = cosinePerLayer
        report.signConflict = SignConflictReport(tasks: tasks, matrix: signConflict)
        report.orthoRegPenaltyPerLayer = gramDeviation
        report.singularValues = singularValues
    }
}

extension MergeSettings {
    /// The knobs the method reads, for report.json.
    public var reportKnobs: RunReport.MergeKnobs {
        let uses = Set(method.knobs)
        return RunReport.MergeKnobs(
            density: uses.contains(.density) ? density : nil, trim: uses.contains(.trim) ? trim.rawValue : nil,
            gamma: uses.contains(.gamma) ? gamma : nil, lambda: uses.contains(.lambda) ? consensusLambda : nil,
            k: uses.contains(.k) ? consensusK : nil, seed: uses.contains(.seed) ? seed : nil)
    }
}
