#include "hylo/eval/ruler_text.h"

#include <cctype>

namespace hylo::eval::ruler {
namespace {

constexpr std::string_view kEssay =
    "Most of the work that matters is done slowly, by people who keep returning to the same problem long after "
    "the excitement has faded. It is tempting to believe that good ideas arrive all at once, but when you look "
    "closely at how anything useful was built, you find a long series of small corrections. Someone tried a "
    "thing, noticed that it was wrong in a particular way, and tried again with that one mistake removed. The "
    "trouble is that this kind of progress is hard to see from the outside. A finished bridge looks inevitable, "
    "and nobody admires the hundred drawings that were thrown away before the final one. So young builders often "
    "conclude that they lack some gift the masters had, when what they really lack is patience with their own "
    "early failures. There is a second lesson hidden here. If progress comes from corrections, then the most "
    "valuable habit is the one that makes mistakes visible quickly. Writers read their drafts aloud. Engineers "
    "measure before they argue. Cooks taste the soup. None of these habits is glamorous, and all of them are "
    "cheap, which may be why they are so easy to skip. When a project goes badly, it is rarely because the people "
    "involved were not clever enough. More often they stopped looking at what was actually happening and started "
    "defending what they had hoped would happen. The cure is not more intelligence but more honesty, and honesty "
    "of this sort can be practised like any other skill. Start with small things. Check one assumption a day. "
    "Write down what you expect before you run the experiment, so that you cannot quietly change your mind "
    "afterwards. Keep a list of the times you were wrong and read it when you feel certain. Over a few years "
    "these small habits add up to something that looks, from the outside, very much like talent. It is worth "
    "remembering, too, that the people we call experts are mostly those who have made every ordinary mistake in "
    "their field at least once and have learned to recognise the early signs of each. Their confidence is not a "
    "feeling that they cannot fail. It is the memory of having failed in many specific ways and having found the "
    "way back each time. That memory cannot be borrowed or bought. It has to be earned one correction at a time, "
    "which is slow, and which is also the only method anyone has found that reliably works.";

constexpr std::string_view kAdjectives[] = {
    "able", "acid", "active", "afraid", "agile", "alert", "amber", "ancient", "angry", "anxious", "arctic",
    "awake", "bald", "bare", "basic", "bitter", "blank", "bold", "brave", "brief", "bright", "brisk", "broad",
    "bumpy", "busy", "calm", "careful", "cheap", "cheerful", "chilly", "civil", "clean", "clever", "cloudy",
    "coarse", "cold", "cosy", "crisp", "cruel", "curious", "curly", "damp", "dark", "dear", "deep", "dense",
    "dizzy", "dry", "dull", "dusty", "eager", "early", "easy", "elder", "empty", "equal", "exact", "faint",
    "fair", "famous", "fancy", "fast", "fierce", "firm", "flat", "fluffy", "fond", "fragile", "free", "fresh",
    "friendly", "full", "fuzzy", "gentle", "giant", "glad", "glossy", "golden", "grand", "greasy", "great",
    "green", "grumpy", "handy", "happy", "hard", "harsh", "heavy", "hidden", "hollow", "honest", "huge",
    "humble", "hungry", "icy", "idle", "jolly", "juicy", "keen", "kind", "large", "late", "lazy", "lean",
    "light", "little", "lively", "lonely", "long", "loud", "lucky", "mellow", "merry", "mild", "misty",
    "modern", "moist", "narrow", "nasty", "neat", "nervous", "noble", "noisy", "odd", "old", "orange", "pale",
    "patient", "plain", "polite", "poor", "proud", "purple", "quick", "quiet", "rapid", "rare", "raw", "ready",
    "red", "rich", "rigid", "ripe", "rough", "round", "royal", "rusty", "sad", "safe", "salty", "sharp", "shiny",
    "short", "shy", "silent", "silky", "silly", "simple", "sleepy", "slim", "slow", "small", "smooth", "soft",
    "solid", "sour", "spare", "spicy", "square", "stale", "steady", "steep", "sticky", "stiff", "strange",
    "strict", "strong", "sunny", "super", "sweet", "swift", "tall", "tame", "tender", "thick", "thin", "tidy",
    "tiny", "tough", "true", "ugly", "upset", "vast", "violet", "vivid", "warm", "weak", "wet", "white", "wide",
    "wild", "wise", "witty", "wooden", "young", "zany", "zealous"};

constexpr std::string_view kNouns[] = {
    "acorn", "anchor", "apple", "arrow", "attic", "badge", "bakery", "balcony", "banana", "barrel", "basket",
    "beach", "beard", "bell", "bench", "bicycle", "blanket", "bottle", "bridge", "brush", "bucket", "button",
    "cabin", "cactus", "camera", "candle", "canoe", "canyon", "carpet", "castle", "cellar", "chair", "cherry",
    "chimney", "circus", "cliff", "clock", "cloud", "coconut", "comet", "compass", "cookie", "cottage", "crayon",
    "cricket", "crown", "cushion", "daisy", "desert", "diamond", "dolphin", "donkey", "dragon", "drum", "eagle",
    "engine", "envelope", "falcon", "feather", "fence", "ferry", "fiddle", "flute", "forest", "fountain", "fox",
    "garden", "garlic", "giraffe", "glacier", "glove", "goose", "guitar", "hammer", "harbor", "helmet", "hill",
    "honey", "horizon", "island", "jacket", "jelly", "jungle", "kettle", "kitten", "ladder", "lagoon", "lamp",
    "lantern", "lemon", "library", "lizard", "lobster", "magnet", "mango", "marble", "meadow", "mirror",
    "monkey", "mountain", "muffin", "needle", "nest", "notebook", "ocean", "octopus", "onion", "orchard",
    "owl", "paddle", "palace", "panda", "parrot", "peach", "pebble", "pencil", "pepper", "piano", "pillow",
    "pirate", "planet", "pocket", "pond", "potato", "pumpkin", "puzzle", "rabbit", "radio", "raft", "river",
    "robot", "rocket", "saddle", "sailor", "salmon", "sandal", "satchel", "scarf", "scooter", "shadow", "shell",
    "shovel", "spider", "spoon", "squirrel", "stable", "statue", "stone", "storm", "street", "sugar", "suitcase",
    "sunset", "swan", "sweater", "table", "teapot", "tent", "thimble", "thunder", "tiger", "toaster", "tomato",
    "tower", "tractor", "trumpet", "tulip", "tunnel", "turtle", "umbrella", "valley", "vase", "violin", "wagon",
    "walrus", "wallet", "whale", "whistle", "window", "wizard", "yacht", "zebra"};

}  // namespace

std::string_view essay_text() { return kEssay; }
std::span<const std::string_view> adjectives() { return kAdjectives; }
std::span<const std::string_view> nouns() { return kNouns; }

std::vector<std::string> split_words(std::string_view text) {
  std::vector<std::string> words;
  size_t i = 0;
  while (i < text.size()) {
    while (i < text.size() && std::isspace(static_cast<unsigned char>(text[i]))) ++i;
    size_t j = i;
    while (j < text.size() && !std::isspace(static_cast<unsigned char>(text[j]))) ++j;
    if (j > i) words.emplace_back(text.substr(i, j - i));
    i = j;
  }
  return words;
}

}  // namespace hylo::eval::ruler
