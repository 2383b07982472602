// drover-fuzz TARGET [libFuzzer flags] [CORPUS…]
//
// Built normally, it replays each file (or every file of each directory) given through TARGET:
// the committed corpus as a regression run. Built with libFuzzer (scripts/fuzz does it:
// `-Xswiftc -sanitize=fuzzer,address -Xswiftc -DFUZZING`), it fuzzes TARGET with the flags
// and corpus directories given, as libFuzzer does.
import DroverFuzzing
import Foundation

let arguments = CommandLine.arguments
// drover-fuzz --seed DIR: writes the corpus seeds (DIR/TARGET/seed-N), to commit.
if arguments.count == 3, arguments[1] == "--seed" {
    func write(_ target: FuzzTarget, _ inputs: [[UInt8]]) {
        let directory = "\(arguments[2])/\(target.rawValue)"
        try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        for (index, input) in inputs.enumerated() {
            FileManager.default.createFile(atPath: "\(directory)/seed-\(index)", contents: Data(input))
        }
    }
    write(.message, FuzzSeeds.messages().map(FuzzTarget.encode(message:)))
    write(.certificate, [FuzzSeeds.certificate()])
    write(.zap, FuzzSeeds.zapRequests())
    exit(0)
}
guard arguments.count >= 2, let target = FuzzTarget(rawValue: arguments[1]) else {
    let names = FuzzTarget.allCases.map(\.rawValue).joined(separator: ", ")
    FileHandle.standardError.write(Data("usage: drover-fuzz TARGET [CORPUS…]; TARGET is one of \(names)\n".utf8))
    exit(2)
}

#if FUZZING
@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(_ argc: UnsafeMutablePointer<Int32>,
                         _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
                         _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> Int32) -> Int32

nonisolated(unsafe) var fuzzed = target

/// libFuzzer's runtime refers to this symbol; the driver is given the same function.
@_cdecl("LLVMFuzzerTestOneInput")
func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    fuzzed.run(size > 0 && data != nil ? Array(UnsafeBufferPointer(start: data, count: size)) : [])
    return 0
}
// libFuzzer's arguments: the program name, then everything after TARGET.
var driverArguments = [arguments[0]] + arguments.dropFirst(2)
var argc = Int32(driverArguments.count)
var cStrings: [UnsafeMutablePointer<CChar>?] = driverArguments.map { strdup($0) } + [nil]
let status = cStrings.withUnsafeMutableBufferPointer { buffer -> Int32 in
    var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = buffer.baseAddress
    return LLVMFuzzerRunDriver(&argc, &argv, fuzzOne)
}
exit(status)
#else
var inputs = 0
for path in arguments.dropFirst(2) {
    var isDirectory: ObjCBool = false
    guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
        FileHandle.standardError.write(Data("drover-fuzz: \(path) does not exist\n".utf8))
        exit(2)
    }
    let files = isDirectory.boolValue
        ? ((try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []).sorted().map { "\(path)/\($0)" }
        : [path]
    for file in files {
        guard let data = FileManager.default.contents(atPath: file) else { continue }
        target.run(Array(data))
        inputs += 1
    }
}
print("drover-fuzz: replayed \(inputs) inputs through \(target.rawValue) without a crash")
#endif
