// swift-tools-version:6.0
// orthofuse: distributed fine-tuning with OrthoReg and task-vector merging over MPI.
import PackageDescription

let package = Package(
    name: "orthofuse",
    products: [
        .executable(name: "orthofuse", targets: ["orthofuse"]),
        .executable(name: "orthofuse-bench", targets: ["orthofuse-bench"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.0.0"),
        .package(url: "https://github.com/weichsel/ZIPFoundation", from: "0.9.19"),
    ],
    targets: [
        // System libraries, found with pkg-config.
        .systemLibrary(name: "CBLAS", pkgConfig: "openblas", providers: [.apt(["libopenblas-dev"])]),
        .systemLibrary(name: "CMPI", pkgConfig: "ompi-c", providers: [.apt(["libopenmpi-dev"])]),
        // C shim exposing OpenMPI's handle macros (MPI_COMM_WORLD, MPI_FLOAT, ...) as functions.
        .target(name: "MPIShim", dependencies: ["CMPI"]),
        // Numerics, models, merging, I/O, job config. Never imports MPI.
        .target(name: "Core", dependencies: [
            "CBLAS",
            .product(name: "Yams", package: "Yams"),
            .product(name: "ZIPFoundation", package: "ZIPFoundation"),
        ]),
        // The Communicator protocol and its in-process (threads as ranks) implementation.
        .target(name: "Transport"),
        // The only Swift code that touches MPI.
        .target(name: "MPITransport", dependencies: ["Transport", "MPIShim"]),
        .target(name: "Worker", dependencies: ["Core", "Transport"]),
        .target(name: "Coordinator", dependencies: ["Core", "Transport", "Worker"]),
        .executableTarget(name: "orthofuse", dependencies: [
            "Core", "Transport", "MPITransport", "Worker", "Coordinator",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        // Speed measurements (scripts/bench.sh compares them with PyTorch); never run by tests.
        .executableTarget(name: "orthofuse-bench", dependencies: ["Core"]),
        // Shared test helpers (synthetic tasks as real files).
        .target(name: "TestSupport", dependencies: ["Core", "Coordinator", "Transport"], path: "Tests/TestSupport"),
        .testTarget(name: "CoreTests", dependencies: ["Core"], resources: [.copy("Fixtures")]),
        .testTarget(name: "RuntimeTests", dependencies: ["Core", "Transport", "Worker", "Coordinator", "TestSupport"]),
        .testTarget(name: "IntegrationTests", dependencies: ["Core", "TestSupport"]),
    ]
)
