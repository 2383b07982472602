// swift-tools-version: 6.0
import PackageDescription

// Layers, arrows pointing down only:
//   drover (executable) → Drover (roles) → DroverProtocol, DroverPool, ZeroMQ → CZeroMQ (libzmq)
// CDroverShims wraps the few Linux calls Swift's Glibc module hides (pipe2, eventfd, timerfd).
// DroverProtocol and DroverPool are pure Swift and do not import ZeroMQ.
let package = Package(
    name: "drover",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "drover", targets: ["DroverCLI"]),
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
            name: "DroverPool",
            dependencies: ["CDroverShims", .product(name: "DequeModule", package: "swift-collections")]
        ),
        .target(
            name: "Drover",
            dependencies: [
                "ZeroMQ", "DroverProtocol", "DroverPool", "CDroverShims",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "DequeModule", package: "swift-collections"),
            ]
        ),
        .executableTarget(
            name: "DroverCLI",
            dependencies: [
                "Drover", "CDroverShims",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .executableTarget(
            name: "UppercaseWorker",
            dependencies: ["Drover", .product(name: "Logging", package: "swift-log")],
            path: "Examples/UppercaseWorker"
        ),
        .testTarget(name: "ZeroMQTests", dependencies: ["ZeroMQ"]),
        .testTarget(name: "DroverProtocolTests", dependencies: ["DroverProtocol"]),
        .testTarget(name: "DroverPoolTests", dependencies: ["DroverPool"]),
        .testTarget(name: "DroverTests", dependencies: ["Drover", "DroverProtocol"]),
        .testTarget(name: "IntegrationTests", dependencies: ["DroverProtocol", "ZeroMQ"]),
    ]
)
