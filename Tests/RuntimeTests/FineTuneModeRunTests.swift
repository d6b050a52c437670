// FineTuneModeRunTests: whole runs in each fine-tuning mode on in-process ranks, and OrthoReg's
// effect measured on the saved task vectors.
import Foundation
import XCTest
@testable import Coordinator
@testable import Core
@testable import Reporting
import TestSupport
import Transport

final class FineTuneModeRunTests: XCTestCase {
    private var workspace: SyntheticWorkspace!
    private var taskNames: [String] { workspace.taskNames }

    override func setUpWithError() throws {
        workspace = try syntheticWorkspace("modes")
    }

    /// The synthetic MLP job in `mode` (with `finetuneExtra` lines under `finetune:`).
    private func run(output: String, mode: String, lambda: Double, form: String = "frobenius",
                     finetuneExtra: String = "", ranks: Int = 2) throws -> RunReport {
        let text = workspace.jobText(output: output, steps: 60, orthoRegLambda: lambda) {
            $0.replacingOccurrences(of: "mode: full", with: "mode: \(mode)" + finetuneExtra)
                .replacingOccurrences(of: "form: frobenius", with: "form: \(form)")
        }
        return try workspace.run(workspace.plan(text), ranks: ranks)
    }

    private func taskVector(_ output: String, _ task: String) throws -> SafetensorsFile {
        try workspace.read("\(output)/task_vectors/\(task).safetensors")
    }

    /// Σ over 2-D tensors of ‖G − I‖_F, recomputed from a saved task vector.
    private func gramDeviation(_ file: SafetensorsFile) -> Double {
        file.tensors.filter { $0.shape.count == 2 }.map {
            OrthoRegularizer.penalty(delta: $0.values, rows: $0.shape[0], columns: $0.shape[1], form: .frobenius)
        }.reduce(0, +)
    }

    func testEveryModeRunsAndRespectsWhatItTrains() throws {
        // LoRA: the task vector is the dense (α/r)·B·A on every 2-D weight, biases exactly zero.
        let lora = try run(output: "lora", mode: "lora", lambda: 0.5, finetuneExtra: "\n  lora: {rank: 2, alpha: 4}")
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
}

/// The same whole runs with a small ViT (timm layout) on the 4×4 synthetic images.
final class ViTModeRunTests: XCTestCase {
    private var workspace: SyntheticWorkspace!
    private var taskNames: [String] { workspace.taskNames }

    override func setUpWithError() throws {
        workspace = try syntheticWorkspace("vit")
    }

    /// timm's layout, and open_clip's (its first tensor names the flavor's state_dict order).
    private static let models = [
        (model: "{arch: vit, input: [1, 4, 4], patch: 2, width: 8, depth: 1, heads: 2}", first: "cls_token"),
        (model: "{arch: clip_vit, input: [1, 4, 4], patch: 2, width: 8, depth: 1, heads: 2, output_dim: 6, activation: quick_gelu}",
         first: "class_embedding"),
    ]

    private func run(_ output: String, model: String, mode: String, lambda: Double) throws -> RunReport {
        let text = workspace.jobText(output: output, orthoRegLambda: lambda) {
            $0.replacingOccurrences(of: "model: {arch: mlp, input: [16], hidden: [12, 8], activation: gelu}",
                                    with: "model: \(model)")
                .replacingOccurrences(of: "mode: full", with: mode == "lora" ? "mode: lora\n  lora: {rank: 2, alpha: 4}" : "mode: \(mode)")
        }
        return try workspace.run(workspace.plan(text), ranks: 2)
    }

    private func taskVector(_ output: String, _ task: String) throws -> SafetensorsFile {
        try workspace.read("\(output)/task_vectors/\(task).safetensors")
    }

    private static func isAttentionWeight(_ name: String) -> Bool {
        [".attn.qkv.weight", ".attn.proj.weight", ".attn.in_proj_weight", ".attn.out_proj.weight"].contains { name.hasSuffix($0) }
    }

    func testEveryModeWithAndWithoutOrthoReg() throws {
        for (model, first) in Self.models {
            try checkEveryMode(model: model, firstTensor: first)
        }
    }

    private func checkEveryMode(model: String, firstTensor: String) throws {
        for mode in FineTuneMode.allCases {
            for lambda in [0.0, 5.0] {
                let output = "\(firstTensor)-\(mode.rawValue)-\(lambda)"
                let report = try run(output, model: model, mode: mode.rawValue, lambda: lambda)
                XCTAssertEqual(report.run.finetuneMode, mode.rawValue)
                for task in taskNames {
                    let vector = try taskVector(output, task)
                    XCTAssertEqual(vector.names.first, firstTensor, "the flavor's state_dict order")
                    for tensor in vector.tensors {
                        let moved = tensor.values.contains { $0 != 0 }
                        switch mode {
                        case .attention, .lora:
                            if Self.isAttentionWeight(tensor.name) {
                                XCTAssertTrue(moved, "\(output) \(task): \(tensor.name) trained")
                            } else {
                                XCTAssertFalse(moved, "\(output) \(task): \(tensor.name) must be exactly zero")
                            }
                        case .full, .linearized:
                            if tensor.name.hasSuffix(".weight") && tensor.shape.count == 2 {
                                XCTAssertTrue(moved, "\(output) \(task): \(tensor.name) trained")
                            }
                        }
                    }
                }
            }
            // With λ > 0, each trained 2-D weight's update is closer to orthogonal than without.
            for task in taskNames {
                let off = try taskVector("\(firstTensor)-\(mode.rawValue)-0.0", task)
                let on = try taskVector("\(firstTensor)-\(mode.rawValue)-5.0", task)
                for tensor in on.tensors where tensor.shape.count == 2 {
                    let trained = mode == .full || mode == .linearized || Self.isAttentionWeight(tensor.name)
                    guard trained, let reference = off[tensor.name] else { continue }
                    let deviationOn = OrthoRegularizer.penalty(delta: tensor.values, rows: tensor.shape[0],
                                                               columns: tensor.shape[1], form: .frobenius)
                    let deviationOff = OrthoRegularizer.penalty(delta: reference.values, rows: tensor.shape[0],
                                                                columns: tensor.shape[1], form: .frobenius)
                    XCTAssertLessThan(deviationOn, deviationOff, "\(mode) \(task) \(tensor.name)")
                }
            }
        }
    }
}
