// swift-tools-version:6.0
// Fuzz: one libFuzzer target per parser of orthofuse's inputs. Built and run by scripts/fuzz.sh
// (swift build with -sanitize=fuzzer,address); never part of the main build or the tests, which
// replay the crashes kept in Fuzz/crashes/ instead.
import PackageDescription

let targets = ["safetensors", "npy", "npz", "idx", "gzip", "job", "merge_config", "sweep", "control"]

let package = Package(
    name: "orthofuse-fuzz",
    dependencies: [.package(name: "orthofuse", path: "..")],
    targets: targets.map { name in
        .executableTarget(
            name: "fuzz_\(name)",
            dependencies: [.product(name: "OrthofuseParsers", package: "orthofuse"), "FuzzInputs"],
            path: "Sources/fuzz_\(name)",
            swiftSettings: [.unsafeFlags(["-parse-as-library"])])
    } + [
        .target(name: "FuzzInputs", dependencies: [.product(name: "OrthofuseParsers", package: "orthofuse")],
                path: "Sources/FuzzInputs"),
    ]
)
