// AnalysisReport: the report.json sections of the task vector analyses, negation and ξ.
import Core
import JobSchema

/// A square matrix over tasks, rows and columns in `tasks` order.
public struct TaskMatrix: Codable, Sendable, Equatable {
    public var tasks: [String]
    public var matrix: [[Double]]

    public init(tasks: [String], matrix: [[Double]]) {
        self.tasks = tasks
        self.matrix = matrix
    }
}

/// Sign conflicts between pairs of task vectors, with the definition written next to the numbers.
public struct SignConflictReport: Codable, Sendable, Equatable {
    public static let definitionText =
        "over the entries where both task vectors are non-zero, the fraction whose signs differ; 0 when no entry is non-zero in both"
    public var tasks: [String]
    public var matrix: [[Double]]
    public var definition: String

    public init(tasks: [String], matrix: [[Double]], definition: String = SignConflictReport.definitionText) {
        self.tasks = tasks
        self.matrix = matrix
        self.definition = definition
    }
}

/// Task negation θ0 − α·τ_target at the α chosen on validation (the paper's negation protocol).
public struct NegationReport: Codable, Sendable, Equatable {
    public struct Point: Codable, Sendable, Equatable {
        public var alpha: Double
        public var targetValidationAccuracy: Double
        public var controlValidationAccuracy: Double

        public init(alpha: Double, targetValidationAccuracy: Double, controlValidationAccuracy: Double) {
            self.alpha = alpha
            self.targetValidationAccuracy = targetValidationAccuracy
            self.controlValidationAccuracy = controlValidationAccuracy
        }

        enum CodingKeys: String, CodingKey {
            case alpha
            case targetValidationAccuracy = "target_validation_accuracy"
            case controlValidationAccuracy = "control_validation_accuracy"
        }
    }

    public struct Result: Codable, Sendable, Equatable {
        public var target: String
        /// The α chosen on validation.
        public var alpha: Double
        /// Test accuracy of θ0 − α·τ_target on the target task (its own head).
        public var targetAccuracy: Double
        /// Test accuracy of θ0 − α·τ_target on the control task (the control's head).
        public var controlAccuracy: Double
        /// The same two on θ0 (α = 0), for comparison.
        public var targetBaseAccuracy: Double
        public var controlBaseAccuracy: Double
        /// False when no α of the grid kept the control's validation accuracy above the threshold;
        /// then α is the one with the best control accuracy.
        public var constraintMet: Bool
        public var curve: [Point]

        public init(target: String, alpha: Double, targetAccuracy: Double, controlAccuracy: Double,
                    targetBaseAccuracy: Double, controlBaseAccuracy: Double, constraintMet: Bool, curve: [Point]) {
            self.target = target
            self.alpha = alpha
            self.targetAccuracy = targetAccuracy
            self.controlAccuracy = controlAccuracy
            self.targetBaseAccuracy = targetBaseAccuracy
            self.controlBaseAccuracy = controlBaseAccuracy
            self.constraintMet = constraintMet
            self.curve = curve
        }

        enum CodingKeys: String, CodingKey {
            case target, alpha, curve
            case targetAccuracy = "target_accuracy"
            case controlAccuracy = "control_accuracy"
            case targetBaseAccuracy = "target_base_accuracy"
            case controlBaseAccuracy = "control_base_accuracy"
            case constraintMet = "constraint_met"
        }
    }

    public var control: String
    public var threshold: Double
    /// The control's validation accuracy on θ0; α must keep it at threshold × this or above.
    public var controlBaseValidationAccuracy: Double
    public var results: [Result]

    public init(control: String, threshold: Double, controlBaseValidationAccuracy: Double, results: [Result]) {
        self.control = control
        self.threshold = threshold
        self.controlBaseValidationAccuracy = controlBaseValidationAccuracy
        self.results = results
    }

    enum CodingKeys: String, CodingKey {
        case control, threshold, results
        case controlBaseValidationAccuracy = "control_base_validation_accuracy"
    }
}

/// Weight disentanglement error ξ(α1, α2) of Ortiz-Jimenez et al. for pairs of tasks.
public struct DisentanglementReport: Codable, Sendable, Equatable {
    public static let definitionText =
        "ξ(α1, α2) = Σ_{t∈{1,2}} mean over task t's inputs of 1{argmax f(x; θ0 + αt·τt) ≠ argmax f(x; θ0 + α1·τ1 + α2·τ2)}, each task with its own head"

    public struct Pair: Codable, Sendable, Equatable {
        /// The two tasks; the first's α indexes the rows of `error`, the second's the columns.
        public var tasks: [String]
        /// error[i][j] = ξ(grid[i], grid[j]), in [0, 2].
        public var error: [[Double]]

        public init(tasks: [String], error: [[Double]]) {
            self.tasks = tasks
            self.error = error
        }
    }

    public var grid: [Double]
    /// Which split the inputs come from.
    public var split: String
    /// task → inputs used: the whole split, or a seeded subset of `evaluate.disentanglement.samples`
    /// (absent from reports written before the cap existed).
    public var inputs: [String: Int]?
    public var definition: String
    /// Wall time the evaluation added to the run.
    public var seconds: Double
    public var pairs: [Pair]

    public init(grid: [Double], split: String, inputs: [String: Int]?, seconds: Double, pairs: [Pair],
                definition: String = DisentanglementReport.definitionText) {
        self.grid = grid
        self.split = split
        self.inputs = inputs
        self.definition = definition
        self.seconds = seconds
        self.pairs = pairs
    }
}
