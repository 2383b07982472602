import Testing
@testable import Drover

@Suite("Certificates: ZPL round trip and clear refusals")
struct CertificateTests {
    @Test("a generated certificate reads back as written, secret and public")
    func roundTrip() throws {
        let certificate = try Certificate.generate(name: "web \"1\"", role: .worker)
        #expect(try Certificate.parse(certificate.text(), origin: "mem") == certificate)
        let pub = try Certificate.parse(certificate.publicOnly.text(), origin: "mem")
        #expect(pub.secretKey == nil && pub.publicKey == certificate.publicKey && pub.role == .worker)
        #expect(pub[metadata: "name"] == "web \"1\"")
    }

    @Test("czmq-style files with single quotes and CRLF lines read too; a file without a key is refused with its name")
    func otherWriters() throws {
        let text = "metadata\r\n    name = 'x'\r\ncurve\r\n    public-key = 'rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7'\r\n"
        #expect(try Certificate.parse(text, origin: "a.pub").publicKey == "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7")
        #expect(throws: Certificate.Problem.self) { try Certificate.parse("metadata\n", origin: "b.pub") }
        do {
            _ = try Certificate.parse("curve\n    public-key = \"short\"\n", origin: "c.pub")
            Issue.record("a bad key was accepted")
        } catch {
            #expect(error.description.contains("c.pub") && error.description.contains("Z85"))
        }
    }
}
