"""The byte-exact local mirror of every watched file (see ``rill.store.mirror``)."""

from rill.store.mirror import FINGERPRINT_SIZE, Gap, GenerationRecord, MirroredFile, MirrorStore, fingerprint_of

__all__ = ["FINGERPRINT_SIZE", "Gap", "GenerationRecord", "MirroredFile", "MirrorStore", "fingerprint_of"]
