import AuthenticationServices
import Foundation
import SocialVPNCore
import UIKit

/// "Sign in with browser": the server's authorization page in an
/// ASWebAuthenticationSession, whose callback (`org.socialvpn.app:/oauth`) brings the
/// token back; the core starts the sign-in and checks the redirect (its `state`).
@MainActor
final class BrowserSignIns: NSObject, ASWebAuthenticationPresentationContextProviding {
    static let redirectUri = "org.socialvpn.app:/oauth"
    static let callbackScheme = "org.socialvpn.app"

    enum Failure: Error {
        case cancelled
        case noRedirect
    }

    private var session: ASWebAuthenticationSession?

    func signIn(jid: String) async throws -> String {
        let started = try oauthBrowserSignIn(
            jid: jid, authorizeUrl: nil, redirectUri: Self.redirectUri, codeFlow: nil
        )
        guard let url = URL(string: started.url) else { throw Failure.noRedirect }
        let redirect: URL = try await withCheckedThrowingContinuation { continuation in
            let session = ASWebAuthenticationSession(
                url: url, callbackURLScheme: Self.callbackScheme
            ) { callback, error in
                if let callback {
                    continuation.resume(returning: callback)
                } else if let error = error as? ASWebAuthenticationSessionError, error.code == .canceledLogin {
                    continuation.resume(throwing: Failure.cancelled)
                } else {
                    continuation.resume(throwing: error ?? Failure.noRedirect)
                }
            }
            session.presentationContextProvider = self
            session.prefersEphemeralWebBrowserSession = true
            self.session = session
            // false: the session could not start (another one is showing); its handler
            // would never run.
            if !session.start() {
                continuation.resume(throwing: Failure.noRedirect)
            }
        }
        // The code flow trades the code for a token over the network: off the main actor.
        let token = try await Task.detached {
            try oauthTokenFromRedirect(
                signIn: started, redirect: redirect.absoluteString, caFile: nil, dnsServers: []
            )
        }.value
        return token.token
    }

    nonisolated func presentationAnchor(for session: ASWebAuthenticationSession) -> ASPresentationAnchor {
        MainActor.assumeIsolated {
            UIApplication.shared.connectedScenes
                .compactMap { ($0 as? UIWindowScene)?.keyWindow }
                .first ?? ASPresentationAnchor()
        }
    }
}
