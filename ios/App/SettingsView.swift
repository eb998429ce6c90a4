import SwiftUI

/// Link policy and log level (they apply when the VPN next starts), and signing out.
@MainActor
struct SettingsView: View {
    @Environment(AppModel.self) private var model
    @State private var onDemand = false
    @State private var logLevel = "warn"

    var body: some View {
        Form {
            Section {
                Toggle("Link only when used", isOn: $onDemand)
            } footer: {
                Text("Off: every enabled friend's devices are linked as they come online. On: a link is made when you send them traffic, and closes after 5 idle minutes (better for large rosters and battery).")
            }
            Section("Log level") {
                Picker("Log level", selection: $logLevel) {
                    ForEach(["error", "warn", "info", "debug"], id: \.self) { Text($0.capitalized) }
                }
                .pickerStyle(.segmented)
            }
            Section {
                Button("Sign out", role: .destructive) { Task { await model.signOut() } }
            }
        }
        .navigationTitle("Settings")
        .onAppear {
            onDemand = model.account?.onDemandLinks ?? false
            logLevel = model.account?.logLevel ?? "warn"
        }
        .onDisappear {
            Task { await model.saveSettings(onDemandLinks: onDemand, logLevel: logLevel) }
        }
    }
}
