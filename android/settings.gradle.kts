// The Android app, for Android Studio and `./gradlew` (needs the Android SDK and NDK; see
// README "Android app"). This machine cannot run Gradle: android/jvm compiles and tests the
// same sources with Maven and Robolectric.
pluginManagement {
    repositories {
        google()
        mavenCentral()
        gradlePluginPortal()
    }
}

dependencyResolutionManagement {
    repositoriesMode.set(RepositoriesMode.FAIL_ON_PROJECT_REPOS)
    repositories {
        google()
        mavenCentral()
        // rustls-platform-verifier's Kotlin half, published beside the crate (its README).
        maven { url = uri("https://github.com/rustls/rustls-platform-verifier/raw/maven-archive/android-release-support/maven/") }
    }
}

rootProject.name = "SocialVPN"
include(":app")
