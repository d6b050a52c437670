// AnalysisStage: step 7b of a run: task vector analyses, negation and ξ, distributed over ranks.
import Core
import Reporting
import Foundation
import Transport
import Worker

/// What step 7b adds to the report (nil parts were not asked for, or are not rank 0's).
struct AnalysisResults {
    var vectors: TaskVectorAnalysis?
    var negation: NegationReport?
    var disentanglement: DisentanglementReport?

    func fill(_ report: inout RunReport) {
        vectors?.fill(&report)
        report.negation = negation
        report.disentanglement = disentanglement
    }
}

/// Rank 0 analyses the gathered task vectors; then every rank evaluates negation and ξ on the
/// tasks whose data it holds, and the values are summed over ranks.
struct AnalysisStage {
    let plan: JobPlan
    let communicator: any Communicator
    let console: Console
    let assignment: [Int]
    let base: FloatBuffer
    let taskVectors: [FloatBuffer]
    let heads: [ClassificationHead]
    /// This rank's tasks (their data), by task index.
    let results: [Int: TrainedTask]
    let entries: [RunReport.TaskEntry]
    /// Every task's validation and test rows, shared out over the ranks (the negation grids).
    let splits: SharedSplits
    /// This rank's backbone (its workspace); evaluation runs in chunks of its cache block.
    let backbone: any Backbone

    private var isCoordinator: Bool { communicator.rank == 0 }
    private var evaluator: DistributedEvaluation { DistributedEvaluation(communicator: communicator, assignment: assignment) }
    /// Linearized task vectors act in tangent space: every model here is evaluated linearized at θ0.
    private var linearization: FloatBuffer? { plan.finetune.parametrization == .linearized ? base : nil }

    func run() throws -> AnalysisResults {
        var results = AnalysisResults()
        let started = Date()
        results.vectors = try PhaseAgreement.run(communicator) {
            isCoordinator ? try TaskVectorAnalysis(tasks: plan.tasks.map(\.name), taskVectors: taskVectors,
                                                   layout: plan.model.layout) : nil
        }
        if let vectors = results.vectors {
            console.info(String(format: "task vector analyses (cosine, sign conflicts, Gram deviation, spectra of %d matrices): %.1f s",
                                vectors.matrices.count, Date().timeIntervalSince(started)))
        }
        if let negation = plan.analysis.negation {
            results.negation = try self.negation(negation)
        }
        if let disentanglement = plan.analysis.disentanglement {
            results.disentanglement = try self.disentanglement(disentanglement)
        }
        return results
    }

    // MARK: Negation

    private enum Split { case validation, test }

    private func accuracy(_ parameters: FloatBuffer, task: Int, split: Split) -> Double {
        let data = results[task]!.data
        return Evaluation.accuracy(backbone: backbone, parameters: parameters, head: heads[task],
                                   data: split == .validation ? data.validation : data.test,
                                   linearizedAround: linearization)
    }

    /// θ0 − α·τ_target for every target and α of the grid on the target's and the control's
    /// validation splits; α chosen by NegationRule; then both test splits at that α.
    private func negation(_ negation: AnalysisPlan.Negation) throws -> NegationReport {
        let started = Date()
        let grid = negation.alphaGrid
        let control = negation.control
        typealias Item = DistributedEvaluation.Item
        // Slot (k·|grid| + a)·2 + r: θ0 − grid[a]·τ_targets[k] on the target's (r = 0) or the control's
        // (r = 1) validation split, from every rank's share of its rows. α = 0 is θ0: each task's
        // zero-shot validation accuracy.
        let lines = negation.targets.flatMap { target in
            [target, control].map {
                SharedSplit.Line(task: $0, direction: taskVectors[target], alphas: grid.map { -$0 },
                                 atBase: entries[$0].zeroShotValidationAccuracy)
            }
        }
        let curves = try splits.validation.accuracies(lines, base: base, heads: heads, backbone: backbone,
                                                      linearizedAround: linearization, communicator: communicator)
        let validation = negation.targets.indices.flatMap { k in
            grid.indices.flatMap { a in [curves[2 * k][a], curves[2 * k + 1][a]] }
        }

        let controlBase = entries[control].zeroShotValidationAccuracy
        var chosen: [(index: Int, constraintMet: Bool)] = []
        var points: [[NegationReport.Point]] = []
        for k in negation.targets.indices {
            let targetCurve = grid.indices.map { validation[2 * (k * grid.count + $0)] }
            let controlCurve = grid.indices.map { validation[2 * (k * grid.count + $0) + 1] }
            chosen.append(NegationRule.choose(targetAccuracy: targetCurve, controlAccuracy: controlCurve,
                                              controlBaseAccuracy: controlBase, threshold: negation.threshold))
            points.append(grid.indices.map {
                NegationReport.Point(alpha: grid[$0], targetValidationAccuracy: targetCurve[$0],
                                     controlValidationAccuracy: controlCurve[$0])
            })
        }

        let testItems = negation.targets.indices.flatMap { k in
            [Item(model: k, task: negation.targets[k]), Item(model: k, task: control)]
        }
        let test = try evaluator.run(testItems, parameterCount: base.count, build: { k, parameters in
            WeightDisentanglement.combine(base: base, [(taskVectors[negation.targets[k]], -grid[chosen[k].index])],
                                          into: parameters)
        }, measure: { index, parameters in
            accuracy(parameters, task: testItems[index].task, split: .test)
        })

        let names = plan.tasks.map(\.name)
        let report = NegationReport(
            control: names[control], threshold: negation.threshold, controlBaseValidationAccuracy: controlBase,
            results: negation.targets.indices.map { k in
                let target = negation.targets[k]
                return NegationReport.Result(
                    target: names[target], alpha: grid[chosen[k].index], targetAccuracy: test[2 * k],
                    controlAccuracy: test[2 * k + 1], targetBaseAccuracy: entries[target].zeroShotAccuracy,
                    controlBaseAccuracy: entries[control].zeroShotAccuracy, constraintMet: chosen[k].constraintMet,
                    curve: points[k])
            })
        if isCoordinator {
            for result in report.results {
                console.info(String(
                    format: "negation of %@: α = %.2f, target %.2f%% → %.2f%%, control %@ %.2f%% → %.2f%%%@",
                    result.target, result.alpha, 100 * result.targetBaseAccuracy, 100 * result.targetAccuracy,
                    report.control, 100 * result.controlBaseAccuracy, 100 * result.controlAccuracy,
                    result.constraintMet ? "" : " (no α kept the control above the threshold)"))
            }
            console.info(String(format: "negation: %d target(s) × %d α values, %.1f s", negation.targets.count,
                                grid.count, Date().timeIntervalSince(started)))
        }
        return report
    }

    // MARK: Disentanglement

    /// ξ(α1, α2) for every pair over grid × grid on the test splits (at most `samples` inputs
    /// per task). The owner of each task of a pair computes that task's term: its predictions
    /// under θ0 + αt·τt (once per α, shared by all pairs) against those of θ0 + α1·τ1 + α2·τ2.
    private func disentanglement(_ plan: AnalysisPlan.Disentanglement) throws -> DisentanglementReport {
        let started = Date()
        let grid = plan.grid
        let size = grid.count
        let names = self.plan.tasks.map(\.name)
        // The inputs of each task of this rank, and their predictions under θ0 + grid[a]·τt.
        let scratch = FloatBuffer(count: base.count)
        var inputs: [Int: Dataset] = [:]
        var alone: [Int: [[Int32]]] = [:]
        for task in Set(plan.pairs.joined()) where results[task] != nil {
            let test = results[task]!.data.test
            if plan.samples > 0, test.count > plan.samples {
                // Seeded by the task's name, so every rank count picks the same inputs.
                var random = RandomStream(seed: self.plan.seed, label: "disentanglement/\(names[task])")
                inputs[task] = test.subset(random.permutation(test.count).prefix(plan.samples).sorted())
            } else {
                inputs[task] = test
            }
            alone[task] = grid.map {
                WeightDisentanglement.predictions(
                    backbone: backbone, base: base, vector: taskVectors[task], alpha: $0, head: heads[task],
                    data: inputs[task]!, scratch: scratch, linearizedAround: linearization)
            }
        }
        // Model (p·size + i)·size + j is θ0 + grid[i]·τ_first + grid[j]·τ_second of pair p; two
        // items per model, the first task's term then the second's.
        typealias Item = DistributedEvaluation.Item
        var items: [Item] = []
        for (p, pair) in plan.pairs.enumerated() {
            for model in (p * size * size)..<((p + 1) * size * size) {
                items.append(Item(model: model, task: pair[0]))
                items.append(Item(model: model, task: pair[1]))
            }
        }
        func decode(_ model: Int) -> (pair: [Int], i: Int, j: Int) {
            (plan.pairs[model / (size * size)], (model / size) % size, model % size)
        }
        let terms = try evaluator.run(items, parameterCount: base.count, build: { model, parameters in
            let (pair, i, j) = decode(model)
            WeightDisentanglement.combine(base: base, [(taskVectors[pair[0]], grid[i]), (taskVectors[pair[1]], grid[j])],
                                          into: parameters)
        }, measure: { index, parameters in
            let (pair, i, j) = decode(items[index].model)
            let first = index % 2 == 0
            let task = first ? pair[0] : pair[1]
            return WeightDisentanglement.term(
                backbone: backbone, combined: parameters, otherAlpha: first ? grid[j] : grid[i], head: heads[task],
                data: inputs[task]!, ownPredictions: alone[task]![first ? i : j],
                linearizedAround: linearization)
        })
        let pairs = plan.pairs.enumerated().map { p, pair in
            DisentanglementReport.Pair(tasks: pair.map { names[$0] }, error: (0..<size).map { i in
                (0..<size).map { j in
                    let model = (p * size + i) * size + j
                    return terms[2 * model] + terms[2 * model + 1]
                }
            })
        }
        // Every rank knows each split's size from the gathered metrics.
        var used: [String: Int] = [:]
        for task in Set(plan.pairs.joined()) {
            let available = entries[task].testSamples
            used[names[task]] = plan.samples > 0 ? min(plan.samples, available) : available
        }
        let seconds = Date().timeIntervalSince(started)
        if isCoordinator {
            let cap = plan.samples > 0 ? "at most \(plan.samples) test inputs per task" : "all test inputs"
            console.info(String(format: "disentanglement error ξ: %d pair(s) on a %d×%d grid over [%g, %g], %@: %.1f s",
                                pairs.count, size, size, grid.first ?? 0, grid.last ?? 0, cap, seconds))
        }
        return DisentanglementReport(grid: grid, split: "test", inputs: used, seconds: seconds, pairs: pairs)
    }
}
