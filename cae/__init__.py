"""What every stage shares and none owns: the `cae` command's dispatcher, image decoding and the
manifest schema. Torch-free and light: `pip install cae[serve]` uses it as much as training does."""
