"""Find, test and use the skill neurons of pre-trained Transformers."""

__version__ = "0.1.0"
