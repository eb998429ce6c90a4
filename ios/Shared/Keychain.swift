import Foundation
import Security

/// The account's secret (password or OAuth token) in the Keychain, in the access group the
/// app and the extension share; readable after the first unlock (the extension may start
/// on demand while the phone is locked), never synchronised to other devices.
struct Keychain {
    var service = Shared.keychainService
    /// nil: the app's default group (tests); the apps pass the shared group.
    var accessGroup: String?

    enum Failure: Error, Equatable {
        case status(OSStatus)
    }

    func save(secret: String, account: String) throws {
        try delete(account: account)
        var query = base(account: account)
        query[kSecValueData as String] = Data(secret.utf8)
        query[kSecAttrAccessible as String] = kSecAttrAccessibleAfterFirstUnlockThisDeviceOnly
        let status = SecItemAdd(query as CFDictionary, nil)
        guard status == errSecSuccess else { throw Failure.status(status) }
    }

    /// The secret, or nil when there is none (signed out, or a restore to another phone).
    func secret(account: String) throws -> String? {
        var query = base(account: account)
        query[kSecReturnData as String] = true
        query[kSecMatchLimit as String] = kSecMatchLimitOne
        var item: CFTypeRef?
        let status = SecItemCopyMatching(query as CFDictionary, &item)
        if status == errSecItemNotFound { return nil }
        guard status == errSecSuccess, let data = item as? Data else { throw Failure.status(status) }
        return String(data: data, encoding: .utf8)
    }

    func delete(account: String) throws {
        let status = SecItemDelete(base(account: account) as CFDictionary)
        guard status == errSecSuccess || status == errSecItemNotFound else {
            throw Failure.status(status)
        }
    }

    private func base(account: String) -> [String: Any] {
        var query: [String: Any] = [
            kSecClass as String: kSecClassGenericPassword,
            kSecAttrService as String: service,
            kSecAttrAccount as String: account,
        ]
        if let accessGroup {
            query[kSecAttrAccessGroup as String] = accessGroup
        }
        return query
    }
}
