// FineTuneModeRunTests: whole runs in each fine-tuning mode on in-process ranks, and OrthoReg's
// effect measured on the saved task vectors.
import Foundation
import XCTest
@testable import Coordinator
@testable import Core
import TestSupport
import Transport

final class FineTuneModeRunTests: XCTestCase {
    private var directory: URL!
    private var taskNames: [String] = []

    override func setUpWithError() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("orthofuse-modes-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        taskNames = try SyntheticTasks.write(to: directory)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: directory)
    }

    private func run(output: String, mode: String, lambda: Double, form: String = "frobenius",
                     extra: String = "", ranks: Int = 2) throws -> RunReport {
        var text = SyntheticTasks.jobYAML(taskNames: taskNames, steps: 60, extra: extra, orthoRegLambda: lambda)
        text = text.replacingOccurrences(of: "output: out", with: "output: \(output)")
            .replacingOccurrences(of: "mode: full", with: "mode: \(mode)")
            .replacingOccurrences(of: "form: frobenius", with: "form: \(form)")
        let plan = try JobPlan(config: JobConfig.parse(text, origin: "job.yaml", baseDirectory: directory))
        let reports = try InProcessWorld.run(size: ranks) { communicator in
            try JobRunner(plan: plan, communicator: communicator,
                          console: Console(rank: communicator.rank, size: ranks, level: .quiet)).run()
        }
        return try XCTUnwrap(reports[0])
    }

    private func taskVector(_ output: String, _ task: String) throws -> SafetensorsFile {
        try Safetensors.read(directory.appendingPathComponent("\(output)/task_vectors/\(task).safetensors"))
    }

    /// Σ over 2-D tensors of ‖G − I‖_F, recomputed from a saved task vector.
    private func gramDeviation(_ file: SafetensorsFile) -> Double {
        file.tensors.filter { $0.shape.count == 2 }.map {
            OrthoRegularizer.penalty(delta: $0.values, rows: $0.shape[0], columns: $0.shape[1], form: .frobenius)
        }.reduce(0, +)
    }

    func testEveryModeRunsAndRespectsWhatItTrains() throws {
        // LoRA: the task vector is the dense (α/r)·B·A on every 2-D weight, biases exactly zero.
        let lora = try runWithSection(output: "lora", mode: "lora", section: "  lora: {rank: 2, alpha: 4}")
        for task in taskNames {
            let file = try taskVector("lora", task)
            for tensor in file.tensors {
                if tensor.shape.count == 2 {
                    XCTAssertGreaterThan(tensor.values.map(abs).max() ?? 0, 0, "\(task) \(tensor.name) trained")
                } else {
                    XCTAssertTrue(tensor.values.allSatisfy { $0 == 0 }, "\(task) \(tensor.name) must be exactly zero")
                }
            }
        }
        XCTAssertEqual(lora.run.finetuneMode, "lora")

        // Linearized: trains and merges in tangent space; every parameter may move.
        let linearized = try run(output: "linearized", mode: "linearized", lambda: 0.5)
        for task in linearized.tasks {
            XCTAssertGreaterThan(task.taskVectorNorm, 0)
            XCTAssertGreaterThan(task.finetunedAccuracy, 0.5, "\(task.name) learns in tangent space")
        }

        // Attention-only needs attention layers: an MLP job is refused with the reason.
        XCTAssertThrowsError(try run(output: "attention", mode: "attention", lambda: 0)) { error in
            XCTAssertTrue("\(error)".contains("finetune.mode") && "\(error)".contains("attention"), "\(error)")
        }
    }

    func testLargeLambdaLowersTheGramDeviationOfEveryTaskVector() throws {
        // The squared form's gradient grows with ‖ΔW‖³: a smaller λ keeps it stable at this learning rate.
        for (form, lambda) in [("frobenius", 10.0), ("squared", 1.0)] {
            _ = try run(output: "off-\(form)", mode: "full", lambda: 0, form: form)
            _ = try run(output: "on-\(form)", mode: "full", lambda: lambda, form: form)
            for task in taskNames {
                let off = gramDeviation(try taskVector("off-\(form)", task))
                let on = gramDeviation(try taskVector("on-\(form)", task))
                XCTAssertLessThan(on, off, "\(form) \(task): ‖G − I‖ with λ = \(lambda) (\(on)) should be below λ = 0 (\(off))")
            }
        }
    }

    private func runWithSection(output: String, mode: String, section: String) throws -> RunReport {
        try run(output: output, mode: mode, lambda: 0.5, extraFinetune: section)
    }

    private func run(output: String, mode: String, lambda: Double, extraFinetune: String) throws -> RunReport {
        var text = SyntheticTasks.jobYAML(taskNames: taskNames, steps: 60, orthoRegLambda: lambda)
        text = text.replacingOccurrences(of: "output: out", with: "output: \(output)")
            .replacingOccurrences(of: "mode: full", with: "mode: \(mode)\n\(extraFinetune)")
        let plan = try JobPlan(config: JobConfig.parse(text, origin: "job.yaml", baseDirectory: directory))
        let reports = try InProcessWorld.run(size: 2) { communicator in
            try JobRunner(plan: plan, communicator: communicator,
                          console: Console(rank: communicator.rank, size: 2, level: .quiet)).run()
        }
        return try XCTUnwrap(reports[0])
    }
}
