@testable import SocialVPN
import XCTest

/// The secret's round trip through the Keychain (in the host app's own group).
final class KeychainTests: XCTestCase {
    private let keychain = Keychain(service: "org.socialvpn.tests.\(UUID().uuidString)", accessGroup: nil)

    override func tearDownWithError() throws {
        try keychain.delete(account: "alice@example.org")
    }

    func testSaveReadReplaceDelete() throws {
        XCTAssertNil(try keychain.secret(account: "alice@example.org"))
        try keychain.save(secret: "first", account: "alice@example.org")
        XCTAssertEqual(try keychain.secret(account: "alice@example.org"), "first")
        try keychain.save(secret: "sécond ✓", account: "alice@example.org")
        XCTAssertEqual(try keychain.secret(account: "alice@example.org"), "sécond ✓")
        XCTAssertNil(try keychain.secret(account: "bob@example.org"))
        try keychain.delete(account: "alice@example.org")
        XCTAssertNil(try keychain.secret(account: "alice@example.org"))
        try keychain.delete(account: "alice@example.org")
    }

    func testTheAccountRoundTripsWithoutItsSecret() throws {
        let account = StoredAccount(jid: "alice@example.org", usesToken: true, server: "xmpp.example.org:5222")
        let data = try account.encoded()
        XCTAssertEqual(try StoredAccount.decoded(from: data), account)
        XCTAssertFalse(String(decoding: data, as: UTF8.self).contains("secret"))
    }
}
