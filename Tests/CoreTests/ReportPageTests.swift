// ReportPageTests: report.html parses as XML, is self-contained and has every section.
import Foundation
import XCTest
@testable import Core
@testable import Reporting
#if canImport(FoundationXML)
import FoundationXML
#endif

final class ReportPageTests: XCTestCase {
    /// Collects element names, ids, and the attributes of every <svg>.
    private final class Collector: NSObject, XMLParserDelegate {
        var elements: [String] = []
        var ids: [String] = []
        var svgAttributes: [[String: String]] = []
        var attributeValues: [String] = []

        func parser(_ parser: XMLParser, didStartElement name: String, namespaceURI: String?, qualifiedName: String?,
                    attributes: [String: String] = [:]) {
            elements.append(name)
            if let id = attributes["id"] { ids.append(id) }
            if name == "svg" { svgAttributes.append(attributes) }
            attributeValues += attributes.values
        }
    }

    static func fullReport() -> RunReport {
        let tasks = ["mnist", "fashion<&>"]
        var report = RunReport(
            run: .init(job: "demo", seed: 1993, ranks: 2, finetuneMode: "full", orthoRegLambda: 1, orthoRegForm: "frobenius",
                       blasCore: "SkylakeX", wallSeconds: 12.5, version: "0.1.0"),
            tasks: tasks.enumerated().map { index, name in
                .init(name: name, zeroShotAccuracy: 0.8, finetunedAccuracy: 0.95, zeroShotValidationAccuracy: 0.8,
                      finetunedValidationAccuracy: 0.96, trainSamples: 100, validationSamples: 10, testSamples: 20,
                      taskVectorNorm: 3, orthoRegPenalty: 10, finalLoss: 0.1, trainSeconds: 2, rank: index)
            },
            merges: [.init(method: "ties", settings: .init(density: 0.2, trim: "global"), alpha: 0.4, absoluteAccuracy: 0.9,
                           normalizedAccuracy: 0.94,
                           perTask: tasks.map { .init(name: $0, accuracy: 0.9, normalizedAccuracy: 0.94) },
                           alphaCurve: (0...20).map { .init(alpha: Double($0) / 20, validationNormalizedAccuracy: 0.9 + Double($0 % 7) / 100,
                                                             validationAbsoluteAccuracy: 0.85) },
                           file: "merged/ties.safetensors")])
        report.cosineSimilarity = TaskMatrix(tasks: tasks, matrix: [[1, 0.12], [0.12, 1]])
        report.cosineSimilarityPerLayer = ["layers.10.weight": [[1, -0.3], [-0.3, 1]], "layers.2.weight": [[1, 0.05], [0.05, 1]]]
        report.signConflict = SignConflictReport(tasks: tasks, matrix: [[0, 0.48], [0.48, 0]])
        report.orthoRegPenaltyPerLayer = Dictionary(uniqueKeysWithValues: tasks.map {
            ($0, ["layers.2.weight": 3.5, "layers.10.weight": 15.9])
        })
        report.singularValues = Dictionary(uniqueKeysWithValues: tasks.map {
            ($0, ["layers.2.weight": [2.5, 1.2, 0.4], "layers.10.weight": [1, 0.9, 0.001]])
        })
        report.negation = NegationReport(
            control: "mnist", threshold: 0.95, controlBaseValidationAccuracy: 0.8,
            results: [.init(target: "fashion<&>", alpha: 0.5, targetAccuracy: 0.3, controlAccuracy: 0.78, targetBaseAccuracy: 0.8,
                            controlBaseAccuracy: 0.8, constraintMet: true,
                            curve: [.init(alpha: 0, targetValidationAccuracy: 0.8, controlValidationAccuracy: 0.8),
                                    .init(alpha: 0.5, targetValidationAccuracy: 0.3, controlValidationAccuracy: 0.77)])])
        report.disentanglement = DisentanglementReport(
            grid: [0, 0.5, 1], split: "test", inputs: ["mnist": 20, "fashion<&>": 20], seconds: 1.5,
            pairs: [.init(tasks: tasks, error: [[0, 0.1, 0.3], [0, 0.05, 0.2], [0, 0.1, 0.15]])])
        return report
    }

    private func check(_ html: String, file: StaticString = #filePath, line: UInt = #line) throws -> Collector {
        let parser = XMLParser(data: Data(html.utf8))
        let collector = Collector()
        parser.delegate = collector
        XCTAssertTrue(parser.parse(), "not well-formed: \(parser.parserError.map { "\($0)" } ?? "") line \(parser.lineNumber)",
                      file: file, line: line)
        for id in ReportPage.sections.map(\.id) {
            XCTAssertTrue(collector.ids.contains(id), "section \(id)", file: file, line: line)
        }
        XCTAssertFalse(collector.svgAttributes.isEmpty, file: file, line: line)
        for svg in collector.svgAttributes {
            XCTAssertNotNil(svg["viewBox"], "every <svg> has a viewBox", file: file, line: line)
        }
        for element in ["script", "link", "img", "iframe", "object", "embed"] {
            XCTAssertFalse(collector.elements.contains(element), "no <\(element)>", file: file, line: line)
        }
        for value in collector.attributeValues {
            XCTAssertFalse(value.contains("://") || value.hasPrefix("//"), "external reference \(value)", file: file, line: line)
        }
        XCTAssertFalse(html.contains("url("), "no CSS url()", file: file, line: line)
        XCTAssertFalse(html.contains("@import"), file: file, line: line)
        return collector
    }

    func testFullReportIsSelfContainedWellFormedAndComplete() throws {
        let html = ReportPage.html(Self.fullReport(), jobText: "name: demo\nnote: \"<b> & 'x'\"\n")
        let collector = try check(html)
        // Results, α curve, cosine + sign conflict + 2 layers, ξ, bars, 2 spectra, negation curve.
        XCTAssertEqual(collector.svgAttributes.count, 1 + 2 + 2 + 1 + 1 + 2 + 1)
        XCTAssertTrue(html.contains("fashion&lt;&amp;&gt;"), "names are escaped")
        XCTAssertTrue(html.contains("&lt;b&gt; &amp; &#39;x&#39;"), "job text is escaped")
        XCTAssertLessThan(html.range(of: "layers.2.weight")!.lowerBound, html.range(of: "layers.10.weight")!.lowerBound,
                          "tensors in layer order")
    }

    func testReportWithoutAnalysesStillHasEverySection() throws {
        var report = Self.fullReport()
        report.cosineSimilarity = nil
        report.cosineSimilarityPerLayer = nil
        report.signConflict = nil
        report.orthoRegPenaltyPerLayer = nil
        report.singularValues = nil
        report.negation = nil
        report.disentanglement = nil
        let html = ReportPage.html(report, jobText: nil)
        _ = try check(html)
        XCTAssertTrue(html.contains("not configured (evaluate.negation"))
    }

    func testReportJSONRoundTripsWithTheNewFields() throws {
        let report = Self.fullReport()
        XCTAssertEqual(try RunReport.decoded(from: report.encoded(), origin: "report.json"), report)
        let json = try XCTUnwrap(JSONSerialization.jsonObject(with: report.encoded()) as? [String: Any])
        for key in ["cosine_similarity", "cosine_similarity_per_layer", "orthoreg_penalty", "sign_conflict",
                    "singular_values", "negation", "disentanglement"] {
            XCTAssertNotNil(json[key], key)
        }
    }

    func testNaturalOrderFollowsLayerNumbers() {
        let names = ["blocks.10.attn.qkv.weight", "blocks.2.mlp.fc1.weight", "blocks.2.attn.qkv.weight", "patch_embed.proj.weight"]
        XCTAssertEqual(names.sorted(by: ReportPage.naturalOrder),
                       ["blocks.2.attn.qkv.weight", "blocks.2.mlp.fc1.weight", "blocks.10.attn.qkv.weight", "patch_embed.proj.weight"])
    }
}
