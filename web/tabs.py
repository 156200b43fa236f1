"""One browser tab at a time: the page has one scene and one worker, so a second tab is told so instead of sharing.

trame shares one state among every connected tab. Each tab draws a random token when its page is mounted and claims
the page with it; the first claim wins and ``owner`` (shared) holds its token. A tab shows the page only when
``owner`` equals its own token (a client-only variable) and otherwise says that the page is open elsewhere. When
the owning tab's connection closes (tab closed or reloaded), ``owner`` is cleared and the next claim takes over.
"""
from __future__ import annotations

from wslink.websocket import LinkProtocol

OWNER = "im_owner"  # shared: the token of the tab that owns the page
TAB = "im_tab"      # client-only: this tab's token
CLAIM = "im_claim"  # trigger: a tab asks for the page
# Mounted in the page: draw a token and claim; claim again whenever the page is freed.
# (The page is mounted again when the view layout changes: the tab keeps its token.)
ON_MOUNT = f"{TAB} = {TAB} || Math.random().toString(36).slice(2) + Date.now(); trigger('{CLAIM}', [{TAB}])"
ON_FREED = f"!{OWNER} && trigger('{CLAIM}', [{TAB}])"
MINE = f"{OWNER} && {OWNER} === {TAB}"
ELSEWHERE = f"{OWNER} && {OWNER} !== {TAB}"
MESSAGE = ("IterMask is open in another browser tab or window, and one page serves one tab at a time (it holds one "
           "scan and one running model). Close the other tab, then reload this one.")


class _Connections(LinkProtocol):
    """Tells the guard when a websocket connection closes."""

    def __init__(self, guard: "OneTab"):
        super().__init__()
        self.guard = guard

    def onClose(self, client_id):  # noqa: N802 (wslink's name)
        self.guard.closed(client_id)


class OneTab:
    """Gives the page to the first tab that claims it (see the module's docstring)."""

    def __init__(self, server):
        self.server = server
        self.owner_client: str | None = None
        server.state[OWNER] = None
        server.state.client_only(TAB)
        server.trigger(CLAIM)(self.claim)
        server.add_protocol_to_configure(lambda root: root.registerLinkProtocol(_Connections(self)))

    def claim(self, token: str) -> None:
        # wslink records the connection a call came from just before calling it (there is no public accessor).
        client = self.server._server.last_active_client_id
        if self.owner_client in (None, client):
            self.owner_client = client
            self.server.state[OWNER] = token
            self.server.state.flush()

    def closed(self, client_id: str) -> None:
        if client_id == self.owner_client:
            self.owner_client = None
            with self.server.state:
                self.server.state[OWNER] = None
