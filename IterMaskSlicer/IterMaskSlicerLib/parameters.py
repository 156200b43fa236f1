"""The module's parameter node: the session's settings, its outputs and where it stands, saved with the scene.

It is the singleton node Slicer's ``ScriptedLoadableModuleLogic`` uses, read by the widget through its
``parameterNodeWrapper`` (``IterMaskSlicerParameterNode`` in ``IterMaskSlicer.py``, which declares every parameter
written here; the tests check that). Nodes are stored as the wrapper stores them: an empty value plus a reference.
"""
from __future__ import annotations

MODULE_NAME = "IterMaskSlicer"  # the singleton tag, as ScriptedLoadableModuleLogic uses it


class Parameters:
    """Writes the module's parameter node in ``scene`` (created on first use)."""

    def __init__(self, scene):
        self.scene = scene

    @property
    def node(self):
        node = self.scene.GetSingletonNode(MODULE_NAME, "vtkMRMLScriptedModuleNode")
        if node is None:
            node = self.scene.CreateNodeByClass("vtkMRMLScriptedModuleNode")
            node.UnRegister(None)  # CreateNodeByClass hands over a reference the scene takes itself
            node.SetSingletonTag(MODULE_NAME)
            node.SetName(MODULE_NAME)
            node.SetAttribute("ModuleName", MODULE_NAME)
            node = self.scene.AddNode(node)
        return node

    def record_settings(self, model: str, policy: str, seed: int, volume, brain_mask) -> None:
        self._write(model=model, policy=policy, seed=seed)
        self._reference(inputVolume=volume, brainMask=brain_mask)

    def record_outputs(self, roles: dict) -> None:
        """References to the output nodes, by role (not parameters of the wrapper: it ignores them)."""
        for role, node in roles.items():
            self.node.SetNodeReferenceID(role, node.GetID())

    def record_state(self, state: dict) -> None:
        self._write(tau=state["tau"], iteration=state["position"], iterations=state["count"])

    def record_threshold(self, threshold: float) -> None:
        self._write(threshold=threshold)

    def record_result(self, segmentation) -> None:
        self.node.SetNodeReferenceID("result", segmentation.GetID())

    def _write(self, **values) -> None:
        node = self.node
        for name, value in values.items():
            node.SetParameter(name, str(value))

    def _reference(self, **nodes) -> None:
        node = self.node
        for name, referenced in nodes.items():
            node.SetParameter(name, "")
            node.SetNodeReferenceID(name, referenced.GetID() if referenced else None)
