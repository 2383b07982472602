import Testing
@testable import Drover

@Suite("Endpoint validation")
struct EndpointTests {
    @Test("good endpoints pass", arguments: ["tcp://127.0.0.1:5555", "tcp://broker.example:1", "ipc:///tmp/x", "inproc://a"])
    func good(_ endpoint: String) {
        #expect(Endpoint.problem(endpoint, binding: false) == nil)
    }

    @Test("binding may use wildcards; connecting may not")
    func wildcards() {
        #expect(Endpoint.problem("tcp://*:5555", binding: true) == nil)
        #expect(Endpoint.problem("tcp://127.0.0.1:*", binding: true) == nil)
        #expect(Endpoint.problem("tcp://*:5555", binding: false) != nil)
        #expect(Endpoint.problem("tcp://host:*", binding: false) != nil)
    }

    @Test("malformed endpoints get a reason that says what to write", arguments: [
        ("localhost:5555", "no transport"), ("tcp://localhost", "no port"), ("tcp://:5555", "no host"),
        ("tcp://h:99999", "1 to 65535"), ("udp://h:1", "supports tcp://"),
    ])
    func bad(_ endpoint: String, _ fragment: String) {
        #expect(Endpoint.problem(endpoint, binding: false)?.contains(fragment) == true)
    }
}
