"""Build tests/data/paper_prompts.json by executing the reference code's own prompt definitions (no model)."""
import ast, json, subprocess, sys
from dataclasses import dataclass
from enum import Enum
from typing import Dict, List, Tuple

REPO = "/work/.mirror/safety-research+introspection-mechanisms/repo"
commit = subprocess.check_output(["git", "-C", REPO, "rev-parse", "HEAD"], text=True).strip()

def defs(path, names):
    src = subprocess.check_output(["git", "-C", REPO, "show", f"HEAD:{path}"], text=True)
    tree = ast.parse(src)
    keep = []
    for node in tree.body:
        n = getattr(node, "name", None)
        if n is None and isinstance(node, ast.Assign):
            n = getattr(node.targets[0], "id", None)
        if n in names or (isinstance(node, ast.For) and "CONCEPT_TO_CATEGORY" in names):
            keep.append(node)
    mod = ast.Module(body=keep, type_ignores=[])
    ns = {"dataclass": dataclass, "Enum": Enum, "Dict": Dict, "List": List, "Tuple": Tuple}
    exec(compile(mod, path, "exec"), ns)
    return ns

c = defs("experiments/03c_prompt_variants.py",
         {"PromptVariant", "PromptTemplate", "PROMPT_TEMPLATES", "CONCEPT_CATEGORIES", "CONCEPT_TO_CATEGORY"})
b = defs("experiments/03b_persona_variants.py",
         {"create_standard_assistant_prompt", "create_standard_assistant_raw_prompt", "create_simulated_user_prompt",
          "create_character_dialogue_prompt", "create_no_chat_format_prompt", "create_story_framing_prompt"})
PV = c["PromptVariant"]
ours = {"original": PV.ORIGINAL, "alternative": PV.ALTERNATIVE_PATH, "skeptical": PV.SKEPTICAL,
        "structured": PV.STRUCTURED_FORMAT, "anti_reward": PV.ANTI_REWARD, "unprompted": PV.UNPROMPTED,
        "hints": PV.PHENOMENOLOGY}
n, concept = 3, "Dust"
category = c["CONCEPT_TO_CATEGORY"].get(concept, "other")
variants = {}
for name, pv in ours.items():  # the messages of 03c build_prompt_for_variant before the chat template
    t = c["PROMPT_TEMPLATES"][pv]
    msgs = []
    if t.system_prompt:
        msgs.append({"role": "system", "content": t.system_prompt.format(category=category, thoughts=concept)})
    msgs += [{"role": "user", "content": t.user_turn1.format(category=category)},
             {"role": "assistant", "content": t.assistant_turn1.format(category=category)},
             {"role": "user", "content": t.user_turn2_template.format(trial_num=n, category=category)}]
    variants[name] = {"reference": f"03c PromptVariant.{pv.name}", "messages": msgs}
formats = {"standard": {"reference": "03b create_standard_assistant_prompt",
                        "messages": b["create_standard_assistant_prompt"](n)[1]}}
for name, fn in {"plain": "create_standard_assistant_raw_prompt", "simulated_user": "create_simulated_user_prompt",
                 "character": "create_character_dialogue_prompt", "no_chat": "create_no_chat_format_prompt",
                 "story": "create_story_framing_prompt"}.items():
    formats[name] = {"reference": f"03b {fn}", "text": b[fn](n)[1]}
out = {"source": "github.com/safety-research/introspection-mechanisms", "commit": commit,
       "files": ["experiments/03c_prompt_variants.py", "experiments/03b_persona_variants.py"],
       "how": "tests/data/make_paper_prompts.py executes the reference code's own definitions (PROMPT_TEMPLATES, "
              "CONCEPT_TO_CATEGORY, create_*_prompt); 03b prepends the BOS token to raw texts afterwards",
       "trial": n, "concept": concept, "category": category, "variants": variants, "formats": formats,
       "categories": c["CONCEPT_CATEGORIES"]}
json.dump(out, open(sys.argv[1], "w"), indent=1, ensure_ascii=False)
print(commit, category)
