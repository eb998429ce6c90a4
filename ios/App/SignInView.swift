import SocialVPNCore
import SwiftUI

/// JID and password, or "Sign in with browser" (OAuth, when the server offers it);
/// Advanced: the server's `host:port` and the subnet friends' devices get addresses in.
/// The fields start from the last account (after a refused password, or a sign-out).
@MainActor
struct SignInView: View {
    @Environment(AppModel.self) private var model
    @State private var jid = ""
    @State private var password = ""
    @State private var server = ""
    @State private var subnet = "100.64.0.0/16"
    @State private var browser = BrowserSignIns()

    var body: some View {
        NavigationStack {
            Form {
                Section {
                    TextField("alice@example.org", text: $jid)
                        .textContentType(.username)
                        .keyboardType(.emailAddress)
                        .textInputAutocapitalization(.never)
                        .autocorrectionDisabled()
                    SecureField("Password", text: $password)
                        .textContentType(.password)
                } footer: {
                    Text("Your XMPP account. Friends are your XMPP contacts.")
                }
                Section {
                    Button("Sign in") { Task { await signIn() } }
                        .disabled(model.busy || jid.isEmpty || password.isEmpty)
                    Button("Sign in with browser") { Task { await signInWithBrowser() } }
                        .disabled(model.busy || jid.isEmpty)
                }
                Section("Advanced") {
                    TextField("Server (host:port), if not found from the domain", text: $server)
                        .textInputAutocapitalization(.never)
                        .autocorrectionDisabled()
                    TextField("Subnet for friends' devices", text: $subnet)
                        .textInputAutocapitalization(.never)
                        .autocorrectionDisabled()
                }
                if let problem = model.problem {
                    Section {
                        Text(problem).foregroundStyle(.red)
                    }
                }
            }
            .navigationTitle("SocialVPN")
            .onAppear(perform: fillInLastAccount)
        }
    }

    private func fillInLastAccount() {
        guard let last = model.account, jid.isEmpty else { return }
        jid = last.jid
        server = last.server
        subnet = last.subnet
    }

    private var account: StoredAccount {
        StoredAccount(
            jid: jid.trimmingCharacters(in: .whitespaces),
            usesToken: false,
            server: server,
            subnet: subnet
        )
    }

    private func signIn() async {
        model.problem = nil
        await model.signIn(account: account, secret: password)
    }

    private func signInWithBrowser() async {
        model.problem = nil
        do {
            let token = try await browser.signIn(jid: account.jid)
            var withToken = account
            withToken.usesToken = true
            await model.signIn(account: withToken, secret: token)
        } catch let error as SignInError {
            model.problem = describeSignInError(error: error)
        } catch BrowserSignIns.Failure.cancelled {
            model.problem = nil
        } catch {
            model.problem = "The browser sign-in failed: \(error.localizedDescription)"
        }
    }
}
