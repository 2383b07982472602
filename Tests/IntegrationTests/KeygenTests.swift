import Foundation
import Testing

extension ProcessTests {
    @Suite("drover keygen")
    struct KeygenTests {
        @Test("writes NAME.key (0600) and NAME.pub as ZPL certificates that pyzmq reads, with role and name; refuses to overwrite")
        func keygen() throws {
            let sandbox = try Sandbox("keygen")
            defer { sandbox.tearDown() }
            let dir = sandbox.path("keys")
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            let made = try sandbox.run(["keygen", "web-1", "--role", "worker", "--dir", dir])
            #expect(made.status == 0, "\(made.stderr)")
            let secret = try FileManager.default.attributesOfItem(atPath: "\(dir)/web-1.key")
            #expect((secret[.posixPermissions] as? Int) == 0o600)
            let publicText = try String(contentsOfFile: "\(dir)/web-1.pub", encoding: .utf8)
            let secretText = try String(contentsOfFile: "\(dir)/web-1.key", encoding: .utf8)
            #expect(publicText.contains("role = \"worker\"") && publicText.contains("name = \"web-1\""))
            #expect(!publicText.contains("secret-key"))
            #expect(secretText.contains("secret-key = \""))

            // Existing ZeroMQ tooling reads them: pyzmq's zmq.auth.load_certificate.
            let python = Process()
            python.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            python.arguments = ["python3", "-c", """
                import sys, zmq.auth
                pub, sec = zmq.auth.load_certificate(sys.argv[1] + '/web-1.key')
                pub2, sec2 = zmq.auth.load_certificate(sys.argv[1] + '/web-1.pub')
                assert pub == pub2 and len(pub) == 40 and len(sec) == 40 and sec2 is None
                print('ok')
                """, dir]
            let out = Pipe()
            python.standardOutput = out
            try python.run()
            python.waitUntilExit()
            #expect(String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self) == "ok\n",
                    "pyzmq reads both files (pip install pyzmq: scripts/setup does)")

            let again = try sandbox.run(["keygen", "web-1", "--role", "worker", "--dir", dir])
            #expect(again.status != 0 && again.stderr.contains("exists"))
            #expect(try String(contentsOfFile: "\(dir)/web-1.key", encoding: .utf8) == secretText, "the key was kept")
            let bad = try sandbox.run(["keygen", "x", "--role", "root", "--dir", dir])
            #expect(bad.status != 0 && bad.stderr.contains("--role must be one of producer, worker, admin, controller, broker"))
        }
    }
}
