// WeightDisentanglement: the disentanglement error ξ of a pair of tasks, and negation's α rule.

/// ξ(α1, α2) = Σ_{t∈{1,2}} E_{x∼D_t}[1{argmax f(x; θ0 + αt·τt) ≠ argmax f(x; θ0 + α1·τ1 + α2·τ2)}]
/// (Ortiz-Jimenez et al., 2023), each task with its own head, term by term so that each term is
/// computed where its task's data is. 0: adding the other task's vector changes no prediction of
/// this task's inputs; the maximum is 2.
public enum WeightDisentanglement {
    /// The share of positions where two prediction lists differ (0 for empty lists).
    public static func disagreement(_ a: [Int32], _ b: [Int32]) -> Double {
        precondition(a.count == b.count, "prediction lists of different lengths")
        guard !a.isEmpty else { return 0 }
        var differing = 0
        for i in a.indices where a[i] != b[i] { differing += 1 }
        return Double(differing) / Double(a.count)
    }

    /// into = θ0 + Σ coefficient·τ, in the order given.
    public static func combine(base: FloatBuffer, _ terms: [(vector: FloatBuffer, coefficient: Double)],
                               into parameters: FloatBuffer) {
        parameters.copy(from: base)
        for (vector, coefficient) in terms {
            ElementWise.axpy(parameters.pointer, Float(coefficient), vector.pointer, count: parameters.count)
        }
    }

    /// One task's term of ξ: the share of `data` whose prediction under θ0 + ownAlpha·τ_own
    /// (`ownPredictions`) changes under `combined` = θ0 + ownAlpha·τ_own + otherAlpha·τ_other.
    /// Exactly 0 without evaluating when otherAlpha is 0 (the two models are the same).
    public static func term(
        backbone: any Backbone, combined: FloatBuffer, otherAlpha: Double, head: ClassificationHead, data: Dataset,
        ownPredictions: [Int32], linearizedAround linearization: FloatBuffer?
    ) -> Double {
        if otherAlpha == 0 { return 0 }
        let predicted = Evaluation.predictions(backbone: backbone, parameters: combined, head: head, data: data,
                                               linearizedAround: linearization)
        return disagreement(ownPredictions, predicted)
    }

    /// Predictions of θ0 + alpha·τ on `data` (the first model of a term).
    public static func predictions(
        backbone: any Backbone, base: FloatBuffer, vector: FloatBuffer, alpha: Double, head: ClassificationHead,
        data: Dataset, scratch: FloatBuffer, linearizedAround linearization: FloatBuffer?
    ) -> [Int32] {
        combine(base: base, [(vector, alpha)], into: scratch)
        return Evaluation.predictions(backbone: backbone, parameters: scratch, head: head, data: data,
                                      linearizedAround: linearization)
    }

    /// One task of a pair as a term needs it: its task vector, frozen head and inputs.
    public struct Side {
        public var taskVector: FloatBuffer
        public var head: ClassificationHead
        public var data: Dataset

        public init(taskVector: FloatBuffer, head: ClassificationHead, data: Dataset) {
            self.taskVector = taskVector
            self.head = head
            self.data = data
        }
    }

    /// ξ over grid × grid in one process: error[i][j] = ξ(grid[i], grid[j]) with α1 for `first`.
    /// (Runs distribute the same terms over the ranks that hold each task's data.)
    public static func errorGrid(backbone: any Backbone, base: FloatBuffer, first: Side, second: Side,
                                 grid: [Double], linearizedAround linearization: FloatBuffer? = nil) -> [[Double]] {
        let scratch = FloatBuffer(count: base.count)
        let firstAlone = grid.map {
            predictions(backbone: backbone, base: base, vector: first.taskVector, alpha: $0, head: first.head,
                        data: first.data, scratch: scratch, linearizedAround: linearization)
        }
        let secondAlone = grid.map {
            predictions(backbone: backbone, base: base, vector: second.taskVector, alpha: $0, head: second.head,
                        data: second.data, scratch: scratch, linearizedAround: linearization)
        }
        return grid.indices.map { i in
            grid.indices.map { j in
                combine(base: base, [(first.taskVector, grid[i]), (second.taskVector, grid[j])], into: scratch)
                return term(backbone: backbone, combined: scratch, otherAlpha: grid[j], head: first.head,
                            data: first.data, ownPredictions: firstAlone[i], linearizedAround: linearization)
                    + term(backbone: backbone, combined: scratch, otherAlpha: grid[i], head: second.head,
                           data: second.data, ownPredictions: secondAlone[j], linearizedAround: linearization)
            }
        }
    }
}

/// The α of task negation θ0 − α·τ_target (the paper's negation protocol): the α of the grid that minimises the
/// target's validation accuracy while the control's stays at threshold × its accuracy on θ0 or
/// above; the smallest such α on ties (the least change to θ0).
public enum NegationRule {
    /// The chosen index and whether the constraint held there. When no α meets the constraint
    /// the one with the highest control accuracy is taken (again the smallest on ties).
    public static func choose(targetAccuracy: [Double], controlAccuracy: [Double], controlBaseAccuracy: Double,
                              threshold: Double) -> (index: Int, constraintMet: Bool) {
        precondition(!targetAccuracy.isEmpty && targetAccuracy.count == controlAccuracy.count)
        let floor = threshold * controlBaseAccuracy
        var best: Int?
        for i in targetAccuracy.indices where controlAccuracy[i] >= floor {
            if best == nil || targetAccuracy[i] < targetAccuracy[best!] { best = i }
        }
        if let best { return (best, true) }
        var safest = 0
        for i in controlAccuracy.indices where controlAccuracy[i] > controlAccuracy[safest] { safest = i }
        return (safest, false)
    }
}
