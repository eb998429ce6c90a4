import SwiftUI

@main
struct SocialVPNApp: App {
    @State private var model = AppModel()
    @Environment(\.scenePhase) private var scenePhase

    var body: some Scene {
        WindowGroup {
            RootView()
                .environment(model)
                .task { await model.load() }
        }
        // `initial`: the first phase counts too (the app starts visible). Only the background
        // hides: `inactive` also means Control Center or a system alert over the app.
        .onChange(of: scenePhase, initial: true) { _, phase in
            model.setVisible(phase != .background)
        }
    }
}

struct RootView: View {
    @Environment(AppModel.self) private var model

    var body: some View {
        switch model.phase {
        case .loading:
            ProgressView()
        case .signedOut:
            SignInView()
        case .signedIn:
            NavigationStack { FriendsView() }
        }
    }
}
