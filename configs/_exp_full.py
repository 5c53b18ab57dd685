from configs.smollm2_135m import get_config as base
from configs.smollm2_135m_shared import get_config as shared
def get_config():
    c = base()
    s = shared()
    c.data.benign = s.data.benign
    c.data.harmful = s.data.harmful
    c.collect.max_new_tokens = 40
    return c
