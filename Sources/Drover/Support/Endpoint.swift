import Foundation

/// Checks an endpoint string before ZeroMQ sees it, so a typo gets a message that says what is
/// wrong and what to write instead of a bare `EINVAL`.
public enum Endpoint {
    /// Returns the problem with `endpoint`, or `nil` when it looks valid.
    /// `binding` allows `*` as a host and as a port (a port the OS picks).
    public static func problem(_ endpoint: String, binding: Bool) -> String? {
        let example = binding ? "tcp://*:5555" : "tcp://HOST:5555"
        guard let range = endpoint.range(of: "://") else {
            return "endpoint \"\(endpoint)\" has no transport; write it like \(example)"
        }
        let transport = endpoint[..<range.lowerBound]
        let address = endpoint[range.upperBound...]
        switch transport {
        case "tcp":
            guard let colon = address.lastIndex(of: ":") else {
                return "endpoint \"\(endpoint)\" has no port; write it like \(example)"
            }
            let host = address[..<colon]
            let port = address[address.index(after: colon)...]
            if host.isEmpty { return "endpoint \"\(endpoint)\" has no host; write it like \(example)" }
            if host == "*" && !binding { return "endpoint \"\(endpoint)\": '*' is for binding; connect to a host name or address, like tcp://HOST:5555" }
            if port == "*" || port == "0" {
                return binding ? nil : "endpoint \"\(endpoint)\" needs a real port to connect to"
            }
            guard let number = Int(port), (1...65535).contains(number) else {
                return "endpoint \"\(endpoint)\" has port \"\(port)\"; a port is a number from 1 to 65535"
            }
            return nil
        case "ipc", "inproc":
            return address.isEmpty ? "endpoint \"\(endpoint)\" has no path" : nil
        default:
            return "endpoint \"\(endpoint)\" uses transport \"\(transport)\"; Drover supports tcp://, ipc:// and inproc://"
        }
    }
}
