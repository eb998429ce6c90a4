import SocialVPNCore
import SwiftUI

/// The main screen: the VPN's switch and status, friend requests, friends (each online
/// device with its address in my network, its link and traffic, and a switch per friend
/// that acts at once; offline friends and people asked too), and my other devices.
@MainActor
struct FriendsView: View {
    @Environment(AppModel.self) private var model
    @State private var adding = false
    @State private var newFriend = ""

    var body: some View {
        List {
            Section {
                Toggle("VPN", isOn: Binding(
                    get: { model.vpnOn },
                    set: { on in Task { await model.setVpn(on: on) } }
                ))
                .disabled(model.switching)
                LabeledContent("Account", value: model.stateText)
                if let status = model.status {
                    LabeledContent("My address", value: status.ipv4)
                    LabeledContent("Subnet", value: status.subnet)
                    LabeledContent("Traffic", value: "↑\(bytes(status.txBytes)) ↓\(bytes(status.rxBytes))")
                }
            }
            if !model.requests.isEmpty {
                Section("Asking to be friends") {
                    ForEach(model.requests, id: \.jid) { request in
                        RequestRow(jid: request.jid)
                    }
                }
            }
            Section("Friends") {
                if model.contacts.isEmpty {
                    Text(model.vpnOn ? "No friends yet: add one with +." : "Switch the VPN on to see your friends.")
                        .foregroundStyle(.secondary)
                }
                ForEach(model.contacts, id: \.jid) { friend in
                    FriendRow(friend: friend)
                }
            }
            if !model.ownDevices.isEmpty {
                Section("My other devices") {
                    ForEach(model.ownDevices, id: \.resource) { device in
                        DeviceLine(device: device, friendEnabled: true)
                    }
                }
            }
            if let problem = model.problem {
                Section { Text(problem).foregroundStyle(.red) }
            }
        }
        .navigationTitle("Friends")
        .toolbar {
            ToolbarItem(placement: .topBarTrailing) {
                Button("Add friend", systemImage: "person.badge.plus") { adding = true }
            }
            ToolbarItem(placement: .topBarLeading) {
                NavigationLink("Settings") { SettingsView() }
            }
        }
        .alert("Add friend", isPresented: $adding) {
            TextField("bob@example.org", text: $newFriend)
                .textInputAutocapitalization(.never)
            Button("Ask") {
                let jid = newFriend.trimmingCharacters(in: .whitespaces)
                newFriend = ""
                Task { await model.perform(.addFriend(jid: jid)) }
            }
            Button("Cancel", role: .cancel) { newFriend = "" }
        }
    }
}

@MainActor
struct RequestRow: View {
    @Environment(AppModel.self) private var model
    let jid: String

    var body: some View {
        HStack {
            Text(jid)
            Spacer()
            Button("Decline") { Task { await model.perform(.declineFriend(jid: jid)) } }
                .buttonStyle(.bordered)
            Button("Accept") { Task { await model.perform(.acceptFriend(jid: jid)) } }
                .buttonStyle(.borderedProminent)
        }
    }
}

@MainActor
struct FriendRow: View {
    @Environment(AppModel.self) private var model
    let friend: Friend
    @State private var pinning: Device?
    @State private var pinAddress = ""

    var body: some View {
        VStack(alignment: .leading, spacing: 4) {
            Toggle(friend.name ?? friend.jid, isOn: Binding(
                get: { friend.enabled },
                set: { on in Task { await model.perform(.setFriendEnabled(jid: friend.jid, enabled: on)) } }
            ))
            let devices = friend.devices.filter { $0.socialvpn }
            if devices.isEmpty {
                Text(friend.pendingOut ? "Asked; waiting for them to accept" : "No SocialVPN device online")
                    .font(.footnote)
                    .foregroundStyle(.secondary)
            }
            ForEach(devices, id: \.resource) { device in
                DeviceLine(device: device, friendEnabled: friend.enabled)
                    .contextMenu {
                        if let uid = device.uid {
                            if device.pinned {
                                Button("Unpin address") { Task { await model.perform(.unpinAddress(device: uid)) } }
                            } else {
                                Button("Pin an address…") {
                                    pinAddress = device.overlayAddress ?? ""
                                    pinning = device
                                }
                            }
                        }
                    }
            }
        }
        .swipeActions {
            Button("Remove", role: .destructive) {
                Task { await model.perform(.removeFriend(jid: friend.jid)) }
            }
        }
        .alert("Pin address", isPresented: Binding(get: { pinning != nil }, set: { if !$0 { pinning = nil } })) {
            TextField("100.64.0.20", text: $pinAddress)
            Button("Pin") {
                if let uid = pinning?.uid {
                    let address = pinAddress
                    Task { await model.perform(.pinAddress(device: uid, address: address)) }
                }
                pinning = nil
            }
            Button("Cancel", role: .cancel) { pinning = nil }
        }
    }
}

/// One device: where it is in my network, then its link and traffic.
struct DeviceLine: View {
    let device: Device
    let friendEnabled: Bool

    var body: some View {
        VStack(alignment: .leading) {
            Text("\(device.resource) — \(device.overlayAddress ?? "no address yet")\(device.pinned ? " (pinned)" : "")")
            Text(linkLine).foregroundStyle(.secondary)
        }
        .font(.footnote)
    }

    private var linkLine: String {
        let link = friendEnabled || device.link.isUp ? describeLink(link: device.link) : "Switched off"
        let traffic = device.txBytes + device.rxBytes > 0 ? " · ↑\(bytes(device.txBytes)) ↓\(bytes(device.rxBytes))" : ""
        return link + traffic
    }
}

extension LinkState {
    var isUp: Bool {
        switch self {
        case .direct, .relayed: return true
        default: return false
        }
    }
}

func bytes(_ count: UInt64) -> String {
    ByteCountFormatter.string(fromByteCount: Int64(clamping: count), countStyle: .binary)
}
