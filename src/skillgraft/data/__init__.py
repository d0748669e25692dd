"""Data layer: clean-up rules, record formats, tokenisation with loss masks, augmentation."""
