package org.socialvpn.app

/**
 * View ids of the screens built in code. Fixed values (not View.generateViewId) so Android
 * restores each view's state by id after rotation and process death.
 */
object Ids {
    const val JID = 0x7f0a0001
    const val PASSWORD = 0x7f0a0002
    const val SERVER = 0x7f0a0003
    const val CA_FILE = 0x7f0a0004
    const val SUBNET = 0x7f0a0005
    const val SIGN_IN = 0x7f0a0006
    const val BROWSER = 0x7f0a0007
    const val ADVANCED = 0x7f0a0008
    const val PROBLEM = 0x7f0a0009
    const val SIGN_IN_SCROLL = 0x7f0a000a
    const val VPN_SWITCH = 0x7f0a0010
    const val MY_ADDRESS = 0x7f0a0011
    const val XMPP_STATE = 0x7f0a0012
    const val TRAFFIC = 0x7f0a0013
    const val FRIENDS = 0x7f0a0014
    const val ADD_FRIEND = 0x7f0a0015
    const val VPN_PROBLEM = 0x7f0a0016
    const val POLICY = 0x7f0a0020
    const val POLICY_PROACTIVE = 0x7f0a0021
    const val POLICY_ON_DEMAND = 0x7f0a0022
    const val LOG_LEVEL = 0x7f0a0023
    const val SIGN_OUT = 0x7f0a0024
    const val DIALOG_INPUT = 0x7f0a0030
}
