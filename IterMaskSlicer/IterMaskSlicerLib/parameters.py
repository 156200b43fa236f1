"""The module's parameter node: the session's settings, its outputs and where it stands, saved with the scene.

It is the singleton node Slicer's ``ScriptedLoadableModuleLogic`` uses, read by the widget through its
``parameterNodeWrapper`` (``IterMaskSlicerParameterNode`` in ``IterMaskSlicer.py``, which declares every parameter
written here; the tests check that). Values are stored as the wrapper's serializers (Slicer 5.10,
``Base/Python/slicer/parameterNodeWrapper/serializers.py``) store them, so the widget reads what the logic wrote: a
node as an empty value plus a reference of the same name; a member of a ``Union`` under ``<name>.<i>``, ``i`` being
the member's place in the union, with ``None`` (the last member) as the value ``"True"``.
"""
from __future__ import annotations

MODULE_NAME = "IterMaskSlicer"  # the singleton tag, as ScriptedLoadableModuleLogic uses it
# The wrapper's ``brainMask: Union[vtkMRMLLabelMapVolumeNode, vtkMRMLSegmentationNode, None]``, in order.
BRAIN_MASK_CLASSES = ("vtkMRMLLabelMapVolumeNode", "vtkMRMLSegmentationNode")


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
        self._reference(inputVolume=volume)
        self._reference_one_of("brainMask", brain_mask, BRAIN_MASK_CLASSES)

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

    def brain_mask(self):
        """The brain mask node as the widget's selector shows it (None: the input's non-zero region)."""
        for index in range(len(BRAIN_MASK_CLASSES)):
            if self.node.HasParameter(f"brainMask.{index}"):
                return self.node.GetNodeReference(f"brainMask.{index}")
        return None

    def _reference_one_of(self, name: str, referenced, classes: tuple[str, ...]) -> None:
        """A node parameter typed as ``Union[*classes, None]``."""
        node = self.node
        for index in range(len(classes) + 1):
            node.UnsetParameter(f"{name}.{index}")
            node.RemoveNodeReferenceIDs(f"{name}.{index}")
        if referenced is None:
            node.SetParameter(f"{name}.{len(classes)}", "True")
            return
        index = next(i for i, cls in enumerate(classes) if referenced.IsA(cls))
        node.SetParameter(f"{name}.{index}", "")
        node.SetNodeReferenceID(f"{name}.{index}", referenced.GetID())

    def _reference(self, **nodes) -> None:
        node = self.node
        for name, referenced in nodes.items():
            node.SetParameter(name, "")
            node.SetNodeReferenceID(name, referenced.GetID() if referenced else None)
