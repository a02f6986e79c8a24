"""Task definitions: losses and evaluation over the split (trainable, frozen) model."""
