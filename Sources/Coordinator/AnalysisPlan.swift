// AnalysisPlan: the negation and disentanglement evaluations of a job, resolved to task indices.
import Core
import JobSchema

public struct AnalysisPlan: Sendable, Equatable {
    public struct Negation: Sendable, Equatable {
        /// Task indices, in the order the job lists them.
        public var targets: [Int]
        public var control: Int
        public var threshold: Double
        /// The job's α grid (`merge.alpha`).
        public var alphaGrid: [Double]
    }

    public struct Disentanglement: Sendable, Equatable {
        /// (first, second) task indices; ξ's rows follow the first task's α.
        public var pairs: [[Int]]
        public var grid: [Double]
        /// At most this many test inputs per task; 0 = all.
        public var samples: Int
    }

    public var negation: Negation?
    /// nil when switched off or when there is no pair (a single task).
    public var disentanglement: Disentanglement?

    public init(negation: Negation? = nil, disentanglement: Disentanglement? = nil) {
        self.negation = negation
        self.disentanglement = disentanglement
    }

    /// From a validated job (task names are known to exist).
    public init(config: JobConfig) throws {
        let names = config.tasks.map(\.name)
        if let negation = config.evaluate.negation {
            let grid = config.merge.alpha.values
            if grid.count > 1, let task = config.tasks.first(where: { config.validationFraction(of: $0) == 0 }) {
                throw OrthofuseError("job.yaml: task '\(task.name)' has validation_fraction 0, so evaluate.negation cannot choose α from merge.alpha's \(grid.count) values; give a validation fraction or a single α")
            }
            self.negation = Negation(
                targets: negation.targetNames(among: names).compactMap { names.firstIndex(of: $0) },
                control: names.firstIndex(of: negation.control)!, threshold: negation.threshold, alphaGrid: grid)
        }
        let pairs = config.evaluate.disentanglement.pairIndices(among: names)
        if !pairs.isEmpty {
            disentanglement = Disentanglement(pairs: pairs.map { [$0.0, $0.1] },
                                              grid: config.evaluate.disentanglement.grid.values,
                                              samples: config.evaluate.disentanglement.samples)
        }
    }
}
