import Foundation
import NetworkExtension
import SocialVPNCore

/// How the app's bytes reach the engine in the tunnel extension (a seam: the tests give a
/// transport of their own).
protocol MessageTransport: Sendable {
    /// The reply's bytes; nil when the extension is not running.
    func send(_ message: Data) async throws -> Data?
}

/// The app's side of the control protocol: typed requests encoded by the core, sent to the
/// extension, replies decoded by the core. The app never runs the engine and never writes
/// or reads the protocol's JSON itself.
struct TunnelClient: Sendable {
    let transport: MessageTransport

    enum Failure: Error, Equatable {
        /// The extension is not running (the VPN is off).
        case notRunning
        /// No reply in time (the extension went away while the request waited).
        case timedOut
        /// A reply of another kind than the request asks for.
        case unexpectedReply
    }

    func request(_ request: ControlRequest) async throws -> ControlReply {
        let bytes = try encodeControlRequest(request: request)
        guard let reply = try await transport.send(bytes) else { throw Failure.notRunning }
        return try decodeControlReply(reply: reply)
    }

    func status() async throws -> Status? {
        if case let .status(status) = try await request(.status) { return status }
        return nil
    }

    func roster() async throws -> [Friend] {
        if case let .roster(friends) = try await request(.roster) { return friends }
        return []
    }

    /// The events after `cursor`, waiting up to `waitMs` for one; the new cursor.
    func events(after cursor: UInt64, waitMs: UInt32) async throws -> ([ControlEvent], UInt64) {
        guard case let .events(events, next) = try await request(.events(after: cursor, waitMs: waitMs)) else {
            throw Failure.unexpectedReply
        }
        return (events, next)
    }
}

/// The real transport: `sendProviderMessage` on the running tunnel's session. A reply
/// that never comes (the extension ended meanwhile) fails after `timeout`, longer than the
/// longest wait the engine holds an `events` reply (30 s).
struct ProviderTransport: MessageTransport {
    let manager: NETunnelProviderManager
    var timeout: TimeInterval = 35

    func send(_ message: Data) async throws -> Data? {
        guard let session = manager.connection as? NETunnelProviderSession,
              session.status == .connected || session.status == .reasserting
        else {
            return nil
        }
        let once = ResumeOnce()
        return try await withCheckedThrowingContinuation { continuation in
            once.set(continuation)
            DispatchQueue.global().asyncAfter(deadline: .now() + timeout) {
                once.resume(with: .failure(TunnelClient.Failure.timedOut))
            }
            do {
                try session.sendProviderMessage(message) { reply in
                    once.resume(with: .success(reply))
                }
            } catch {
                once.resume(with: .failure(error))
            }
        }
    }
}

/// Resumes a continuation exactly once, whichever of the reply and the timeout comes first.
private final class ResumeOnce: @unchecked Sendable {
    private let lock = NSLock()
    private var continuation: CheckedContinuation<Data?, Error>?

    func set(_ continuation: CheckedContinuation<Data?, Error>) {
        lock.withLock { self.continuation = continuation }
    }

    func resume(with result: Result<Data?, Error>) {
        let waiting: CheckedContinuation<Data?, Error>? = lock.withLock {
            defer { self.continuation = nil }
            return self.continuation
        }
        waiting?.resume(with: result)
    }
}
