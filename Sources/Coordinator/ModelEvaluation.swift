// ModelEvaluation: `orthofuse eval`, a given model with a run's heads on every task's test split.
import Core
import Reporting
import Foundation
import Transport
import Worker

public enum ModelEvaluation {
    public struct Row: Sendable, Equatable {
        public var task: String
        public var accuracy: Double
        /// From the run's report.json when it is there.
        public var finetunedAccuracy: Double?
        public var zeroShotAccuracy: Double?
    }

    /// Every rank loads the model; each loads the heads and test splits of its tasks. A linearized
    /// job's model is evaluated as the linearized model at the run's θ0 (base.safetensors), as the
    /// run evaluated its merges. Returns the rows on rank 0, nil elsewhere.
    public static func run(plan: JobPlan, model: URL, run: RunDirectory, communicator: any Communicator) throws -> [Row]? {
        let layout = plan.model.layout
        let assignment = plan.assignment(worldSize: communicator.size)
        let mine = plan.tasks.indices.filter { assignment[$0] == communicator.rank }
        let backbone = plan.model.makeBackbone(maxBatch: plan.finetune.batchSize)
        let parameters = FloatBuffer(count: layout.totalCount)
        let linearized = plan.finetune.parametrization == .linearized
        let base = FloatBuffer(count: linearized ? layout.totalCount : 0)
        var heads: [Int: ClassificationHead] = [:]
        var tests: [Int: Dataset] = [:]
        try PhaseAgreement.run(communicator) {
            try layout.loadBackbone(Safetensors.read(model), into: parameters, origin: model.path)
            if linearized {
                try layout.loadBackbone(Safetensors.read(run.base), into: base, origin: run.base.path)
            }
            for index in mine {
                let task = plan.tasks[index]
                let head = plan.probe.makeHead(classes: task.classes, featureCount: plan.model.featureCount)
                try head.layout.load(Safetensors.read(run.head(task.name)), into: head.parameters,
                                     origin: run.head(task.name).path)
                heads[index] = head
                tests[index] = try TaskDataLoader.loadSplit(task.test, named: "test", of: task, inputShape: backbone.inputShape)
            }
        }
        let items = plan.tasks.indices.map { DistributedEvaluation.Item(model: 0, task: $0) }
        let accuracies = try DistributedEvaluation(communicator: communicator, assignment: assignment).run(
            items, parameterCount: layout.totalCount,
            build: { _, buffer in buffer.copy(from: parameters) },
            measure: { index, buffer in
                Evaluation.accuracy(backbone: backbone, parameters: buffer, head: heads[index]!, data: tests[index]!,
                                    linearizedAround: linearized ? base : nil)
            })
        guard communicator.rank == 0 else { return nil }
        let report = try? run.readReport()
        return plan.tasks.indices.map { index in
            let entry = report?.tasks.first { $0.name == plan.tasks[index].name }
            return Row(task: plan.tasks[index].name, accuracy: accuracies[index],
                       finetunedAccuracy: entry?.finetunedAccuracy, zeroShotAccuracy: entry?.zeroShotAccuracy)
        }
    }

    /// task | accuracy, with zero-shot, fine-tuned and normalised columns when the run reported them.
    public static func table(_ rows: [Row], model: String) -> String {
        let known = rows.allSatisfy { $0.finetunedAccuracy != nil && $0.zeroShotAccuracy != nil }
        var header = ["task", model]
        if known { header += ["zero-shot", "fine-tuned", "normalised"] }
        func percent(_ value: Double) -> String { String(format: "%.2f", 100 * value) }
        var lines: [[String]] = rows.map { row in
            var cells = [row.task, percent(row.accuracy)]
            if known, let finetuned = row.finetunedAccuracy, let zeroShot = row.zeroShotAccuracy {
                cells += [percent(zeroShot), percent(finetuned), percent(finetuned > 0 ? row.accuracy / finetuned : 0)]
            }
            return cells
        }
        let count = Double(max(rows.count, 1))
        var mean = ["mean", percent(rows.map(\.accuracy).reduce(0, +) / count)]
        if known {
            mean += [percent(rows.compactMap(\.zeroShotAccuracy).reduce(0, +) / count),
                     percent(rows.compactMap(\.finetunedAccuracy).reduce(0, +) / count),
                     percent(rows.map { $0.finetunedAccuracy! > 0 ? $0.accuracy / $0.finetunedAccuracy! : 0 }.reduce(0, +) / count)]
        }
        lines.append(mean)
        return TextTable.render(header: header, rows: lines)
    }
}
