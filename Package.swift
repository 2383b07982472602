// swift-tools-version: 6.0
import PackageDescription

// Layers, arrows pointing down only:
//   drover (executable) → Drover (roles) → DroverDispatch → DroverJournal → DroverProtocol
//                                        → DroverPool, ZeroMQ → CZeroMQ (libzmq)
// DroverDispatch (the broker's state machine and its books), DroverJournal (its log on disk,
// through a file interface that tests can replace), DroverProtocol (the wire codec) and
// DroverPool (handler threads) are pure Swift: they cannot import ZeroMQ, so the compiler keeps
// them free of sockets. CDroverShims wraps the few Linux calls Swift's Glibc module hides
// (pipe2, eventfd, timerfd). Linux only: the shims and libzmq's build are Linux's.
let package = Package(
    name: "drover",
    products: [
        .executable(name: "drover", targets: ["DroverCLI"]),
        .executable(name: "drover-fuzz", targets: ["DroverFuzz"]),
        .library(name: "Drover", targets: ["Drover"]),
        .library(name: "ZeroMQ", targets: ["ZeroMQ"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-collections", from: "1.1.0"),
    ],
    targets: [
        .systemLibrary(name: "CZeroMQ", path: "Sources/CZeroMQ"),
        .target(name: "ZeroMQ", dependencies: ["CZeroMQ"]),
        .target(name: "DroverProtocol"),
        .target(name: "CDroverShims"),
        .target(
            name: "DroverJournal",
            dependencies: ["DroverProtocol", "DroverPool", "CDroverShims", .product(name: "DequeModule", package: "swift-collections")]
        ),
        .target(
            name: "DroverDispatch",
            dependencies: ["DroverProtocol", "DroverJournal", .product(name: "DequeModule", package: "swift-collections")]
        ),
        .target(
            name: "DroverPool",
            dependencies: ["CDroverShims", .product(name: "DequeModule", package: "swift-collections")]
        ),
        .target(
            name: "Drover",
            dependencies: [
                "ZeroMQ", "DroverProtocol", "DroverDispatch", "DroverJournal", "DroverPool", "CDroverShims",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "DequeModule", package: "swift-collections"),
            ]
        ),
        .executableTarget(
            name: "DroverCLI",
            dependencies: [
                "Drover", "DroverDispatch", "DroverJournal", "DroverProtocol", "ZeroMQ", "CDroverShims",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // The decoders that read bytes from outside, as fuzz targets (scripts/fuzz runs them
        // under libFuzzer; DroverFuzzingTests replays the committed corpus).
        .target(name: "DroverFuzzing", dependencies: ["Drover", "DroverJournal", "DroverProtocol"]),
        .executableTarget(name: "DroverFuzz", dependencies: ["DroverFuzzing"]),
        .executableTarget(
            name: "UppercaseWorker",
            dependencies: ["Drover", .product(name: "Logging", package: "swift-log")],
            path: "Examples/UppercaseWorker"
        ),
        .testTarget(name: "ZeroMQTests", dependencies: ["ZeroMQ"]),
        .testTarget(name: "DroverProtocolTests", dependencies: ["DroverProtocol"]),
        .testTarget(name: "DroverPoolTests", dependencies: ["DroverPool"]),
        .testTarget(name: "DroverDispatchTests", dependencies: ["DroverDispatch", "DroverProtocol", "DroverJournal"]),
        .testTarget(name: "DroverJournalTests", dependencies: ["DroverJournal", "DroverProtocol"]),
        .testTarget(name: "DroverTests", dependencies: ["Drover", "DroverDispatch", "DroverProtocol"]),
        .testTarget(name: "IntegrationTests", dependencies: ["DroverProtocol", "ZeroMQ"]),
        .testTarget(name: "DroverFuzzingTests", dependencies: ["DroverFuzzing", "DroverProtocol"]),
    ]
)
