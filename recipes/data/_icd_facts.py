"""Hand-written per-code vignette templates for the ICD-10-CM demo set (recipes/data/icd10_demo.jsonl).

Each code maps to phrase pools that generate.py samples from: durations ("dur"), the patient's opening
complaint ("complaint", may use {dur}), doctor/patient history exchanges ("history"), examination or test
findings said by the doctor ("exam"), and a closing assessment in plain words ("assess"). Every pool holds
clinical evidence for its code, never the code itself. Optional keys: "ages" (min, max) and "sexes".
Written for this project; not medical advice.
"""

from __future__ import annotations

Template = dict[str, object]

ICD_TEMPLATES: dict[str, Template] = {
    "J06.9": {
        "dur": ["two days", "three days", "four days", "a couple of days"],
        "complaint": [
            "I've had a runny nose and a scratchy throat for {dur}.",
            "I caught a cold {dur} ago: stuffy nose, sneezing and a bit of a cough.",
            "My nose is blocked and my throat is sore, it's been {dur}.",
        ],
        "history": [
            ("Any fever?", "Maybe a little, nothing above 38."),
            ("Is anyone at home sick?", "Yes, my partner had the same thing last week."),
            ("Any trouble breathing or chest pain?", "No, just the congestion and sneezing."),
            ("Are you coughing anything up?", "Not really, it's a dry tickly cough."),
            ("Any ear pain or pain over your sinuses?", "No, mostly the nose and throat."),
        ],
        "exam": [
            "Your nasal lining is swollen, the throat is mildly red without pus, the ears are normal and the lungs are clear.",
            "Temperature is 37.6, the throat is slightly red, there are no swollen glands and your chest sounds clear.",
            "You have clear nasal discharge, a mildly red throat and a normal chest exam.",
        ],
        "assess": [
            "This is a viral upper respiratory infection, a common cold, so antibiotics won't help; rest and fluids will.",
            "It looks like a simple cold affecting the nose and throat that should settle within a week or so.",
        ],
    },
    "J02.0": {
        "dur": ["a day", "two days", "a day and a half"],
        "ages": (12, 45),
        "complaint": [
            "My throat has been really sore for {dur} and it hurts to swallow.",
            "I've had a bad sore throat and a fever for {dur}.",
            "Swallowing is painful and my neck glands feel swollen, it started {dur} ago.",
        ],
        "history": [
            ("Do you have a cough or a runny nose?", "No, no cough at all, just the throat."),
            ("Have you had a fever?", "Yes, it was 38.9 last night."),
            ("Has anyone around you had strep?", "A couple of people at work had strep throat recently."),
            ("Any rash?", "No rash."),
        ],
        "exam": [
            "Your tonsils are swollen with white patches, the neck glands are tender, and the rapid strep test is positive.",
            "There is pus on both tonsils and tender glands in the front of the neck; the rapid strep swab came back positive.",
            "Temperature is 38.7, the throat is very red with exudate, and the rapid antigen test for group A strep is positive.",
        ],
        "assess": [
            "This is strep throat, a bacterial infection, so I'll prescribe an antibiotic; please finish the whole course.",
            "The positive test confirms streptococcal pharyngitis, which we treat with antibiotics.",
        ],
    },
    "J02.9": {
        "dur": ["two days", "three days", "a few days"],
        "complaint": [
            "My throat has been sore for {dur}.",
            "I've had a scratchy, painful throat for {dur}.",
            "It hurts a bit to swallow and it's been like that for {dur}.",
        ],
        "history": [
            ("Any fever?", "Not that I've measured, I just feel a bit run down."),
            ("Any cough or hoarseness?", "A little hoarse, and a slight cough."),
            (
                "Any trouble swallowing liquids or opening your mouth?",
                "No, I can drink fine, it's just sore.",
            ),
            ("Have you been around anyone sick?", "My kids had colds last week."),
        ],
        "exam": [
            "The back of your throat is red but there's no pus on the tonsils, and the rapid strep test is negative.",
            "Your pharynx is inflamed, the tonsils are not enlarged, and the strep swab came back negative.",
            "The throat looks red, glands are only slightly tender, and the rapid strep test is negative.",
        ],
        "assess": [
            "This is an inflamed throat, a pharyngitis that is most likely viral, so antibiotics aren't needed.",
            "Your sore throat is acute pharyngitis without signs of strep; warm drinks and pain relief should help.",
        ],
    },
    "J20.9": {
        "dur": ["ten days", "about a week", "nearly two weeks"],
        "complaint": [
            "I've had a chesty cough for {dur} after a cold.",
            "This cough has been going on for {dur} and I'm bringing up yellowish phlegm.",
            "I can't shake this cough, it's been {dur} and my chest feels sore from coughing.",
        ],
        "history": [
            ("Any fever now?", "I had a low fever at the start but not anymore."),
            ("Are you short of breath?", "Only a little wheezy when I cough a lot."),
            ("Do you smoke or have asthma?", "No, neither."),
            ("Any blood in the phlegm?", "No, just yellow or clear."),
        ],
        "exam": [
            "Your oxygen level is normal, there are a few scattered wheezes that clear with coughing, and no crackles.",
            "Temperature is normal, breathing rate is normal, and the chest has some coarse sounds but no signs of pneumonia.",
            "Your lungs have a few rhonchi, no focal crackles, and your vital signs are normal.",
        ],
        "assess": [
            "This is acute bronchitis, usually viral, and the cough can take up to three weeks to settle.",
            "It's an inflammation of the large airways after a viral infection, acute bronchitis, and it should clear on its own.",
        ],
    },
    "J01.90": {
        "dur": ["twelve days", "two weeks", "about ten days"],
        "complaint": [
            "I've had a blocked nose and pressure in my face for {dur}.",
            "My cold started {dur} ago and now my face aches and the mucus is thick and green.",
            "There's pain around my eyes and cheeks and a stuffy nose, it's been {dur}.",
        ],
        "history": [
            ("Did it get better and then worse again?", "Yes, I was improving and then it got worse."),
            ("Does the pain get worse when you bend forward?", "Yes, it feels like pressure in my face."),
            ("Any swelling around the eyes or changes in vision?", "No, nothing like that."),
            ("How is your sense of smell?", "I can barely smell anything."),
        ],
        "exam": [
            "There's tenderness over your sinuses, thick discharge in the nose and a mild fever.",
            "The nasal lining is swollen with purulent discharge and the sinuses are tender to tapping.",
            "You have facial tenderness over the sinuses, postnasal drip, and the eyes look normal.",
        ],
        "assess": [
            "This is acute sinusitis; saline rinses and a nasal steroid spray should help, and we'll consider antibiotics if it persists.",
            "The picture fits an acute sinus infection following your cold.",
        ],
    },
    "J30.9": {
        "dur": ["every spring", "every summer", "whenever the pollen count is high"],
        "complaint": [
            "I keep sneezing and my nose runs {dur}.",
            "My eyes itch and my nose is always blocked {dur}.",
            "I get an itchy nose and constant sneezing {dur}.",
        ],
        "history": [
            ("Is it worse at certain times or places?", "Yes, worse around pollen season and when I dust."),
            ("Any fever or body aches?", "No fever, I feel fine otherwise."),
            ("Does anyone in the family have allergies?", "My mother has hay fever too."),
            ("Have antihistamines helped before?", "They help a bit when I remember to take them."),
        ],
        "exam": [
            "The lining of your nose is pale and swollen with clear discharge, and you have dark circles under the eyes.",
            "There is clear watery discharge, pale boggy nasal turbinates and mildly red eyes, but no fever.",
            "Your nose shows pale swollen mucosa and your throat has a cobblestone look from postnasal drip.",
        ],
        "assess": [
            "This is allergic rhinitis; a daily steroid nasal spray and avoiding triggers should help.",
            "Your symptoms fit hay fever, an allergic inflammation of the nose.",
        ],
    },
    "J45.909": {
        "dur": ["since childhood", "for several years", "for a long time"],
        "complaint": [
            "I've had asthma {dur} and I need a refill of my inhalers.",
            "I get wheezy and tight in the chest with exercise and cold air; it's been like that {dur}.",
            "My asthma has been stable {dur}, I'm here for my check-up.",
        ],
        "history": [
            (
                "How often do you use your reliever inhaler?",
                "Maybe once or twice a week, mostly before exercise.",
            ),
            ("Any night-time waking with cough or wheeze?", "Rarely, maybe once a month."),
            ("Have you had any attacks needing the emergency room recently?", "No, none this year."),
            ("What sets it off?", "Cold air, cats and running."),
        ],
        "exam": [
            "Your chest is clear today, oxygen is 98 percent and your peak flow is close to your best.",
            "There's no wheeze today, breathing is comfortable and your spirometry last year showed reversible airway narrowing.",
            "Lungs are clear, you're speaking in full sentences, and your peak flow is normal for you.",
        ],
        "assess": [
            "Your asthma is well controlled at the moment with no flare-up, so we'll continue the same inhalers.",
            "This is asthma without a current attack; let's review your action plan and technique.",
        ],
    },
    "J44.9": {
        "dur": ["for the past year", "for a couple of years", "over the last few months"],
        "ages": (55, 82),
        "complaint": [
            "I get out of breath walking up stairs, it's been getting worse {dur}.",
            "I've had a cough with phlegm most mornings {dur}.",
            "My breathing has slowly got worse {dur}, especially when I'm active.",
        ],
        "history": [
            ("Have you ever smoked?", "For forty years, a pack a day, I quit last year."),
            (
                "Is this worse than usual right now, with more phlegm or fever?",
                "No, it's about the same as always.",
            ),
            ("Do you use any inhalers?", "Just a blue one when I need it."),
            ("How far can you walk on flat ground?", "About two blocks before I have to stop."),
        ],
        "exam": [
            "There's reduced air entry with a prolonged breath out, and spirometry shows fixed airflow obstruction that doesn't reverse.",
            "Your chest is hyperinflated, breath sounds are quiet, and the breathing test shows a low ratio after the bronchodilator.",
            "Oxygen is 94 percent, there's mild wheeze, and spirometry confirms persistent obstruction.",
        ],
        "assess": [
            "This is chronic obstructive pulmonary disease, stable right now; we'll start a daily inhaler and pulmonary rehab.",
            "The results point to COPD from long-term smoking, without a current flare.",
        ],
    },
    "J18.9": {
        "dur": ["three days", "four days", "five days"],
        "complaint": [
            "I've had a high fever and a bad cough for {dur}.",
            "I'm coughing up rusty phlegm and I've had chills for {dur}.",
            "I feel awful, fever, cough, and it hurts on one side when I breathe in; it started {dur} ago.",
        ],
        "history": [
            ("Are you short of breath?", "Yes, even walking to the bathroom."),
            ("How high has the fever been?", "Up to 39.4."),
            ("Any chest pain?", "A sharp pain on the right when I take a deep breath."),
            ("Have you been in hospital recently?", "No, I haven't."),
        ],
        "exam": [
            "There are crackles at the right lung base, oxygen is 93 percent, and the chest X-ray shows a consolidation.",
            "Your breathing is fast, there's dullness and crackles on the right, and the X-ray shows an infiltrate in the right lower lobe.",
            "Temperature is 39.1, there are focal crackles, and the chest film confirms a new patchy shadow in the lung.",
        ],
        "assess": [
            "This is pneumonia, an infection of the lung; we'll start antibiotics and check on you in two days.",
            "The X-ray confirms pneumonia, and we don't know the exact germ yet.",
        ],
    },
    "I10": {
        "dur": ["my last three visits", "two recent checks", "several checks this year"],
        "ages": (35, 80),
        "complaint": [
            "My blood pressure was high at {dur}, so I was asked to come back.",
            "I was told my blood pressure readings were high at {dur}.",
            "I'm here to follow up on my blood pressure, which was raised at {dur}.",
        ],
        "history": [
            ("Any headaches, chest pain or vision changes?", "No, I feel completely fine."),
            ("Does high blood pressure run in your family?", "Yes, my father had it."),
            (
                "How much salt and alcohol do you have?",
                "I eat a lot of takeaway and have a few beers at the weekend.",
            ),
            ("Are you on any medicines that might raise it?", "No, I don't take anything regularly."),
        ],
        "exam": [
            "Today it's 158 over 96 on both arms, your heart sounds normal, and your kidney tests and urine are normal.",
            "Your readings average 150 over 94 at home and in clinic, and there are no signs of heart or kidney damage.",
            "Blood pressure is 162 over 98 after resting, the ECG is normal, and blood tests show normal kidney function.",
        ],
        "assess": [
            "You have essential hypertension, high blood pressure without another cause; we'll start lifestyle changes and a medicine.",
            "This is primary high blood pressure, and we'll recheck it in a month after you start treatment.",
        ],
    },
    "I48.91": {
        "dur": ["a week", "a few days", "about a month"],
        "ages": (55, 85),
        "complaint": [
            "My heart has been fluttering and racing for {dur}.",
            "I feel my heartbeat is irregular and I get tired easily, it's been {dur}.",
            "I've noticed palpitations and some breathlessness for {dur}.",
        ],
        "history": [
            ("Any chest pain or fainting?", "No chest pain, just feeling a bit light-headed."),
            ("Have you had heart problems before?", "Only high blood pressure."),
            ("How much coffee and alcohol do you have?", "Two coffees a day and a glass of wine sometimes."),
            ("Any weakness on one side or trouble speaking?", "No, nothing like that."),
        ],
        "exam": [
            "Your pulse is irregularly irregular at about 110, and the ECG shows atrial fibrillation with no P waves.",
            "The heart rhythm is irregular on listening, and the ECG confirms atrial fibrillation.",
            "Pulse is fast and irregular, blood pressure is fine, and the tracing shows atrial fibrillation.",
        ],
        "assess": [
            "This is atrial fibrillation; we'll control the rate and talk about a blood thinner to lower your stroke risk.",
            "The ECG shows an irregular rhythm from the upper chambers, atrial fibrillation, and we'll arrange a heart ultrasound.",
        ],
    },
    "E11.9": {
        "dur": ["my last check-up", "my annual physical", "a work health screening"],
        "ages": (38, 80),
        "complaint": [
            "My sugar was high at {dur}, so I came to go over the results.",
            "I was told my blood sugar was raised at {dur}, and I've been a bit more thirsty lately.",
            "I'm here about my diabetes blood tests from {dur}.",
        ],
        "history": [
            ("Any numbness in your feet or problems with your eyes?", "No, my last eye exam was normal."),
            ("Does anyone in your family have diabetes?", "Yes, my mother and my brother."),
            ("How active are you?", "Not very, I sit at a desk most of the day."),
            ("Any kidney problems you know of?", "Not that I know of."),
        ],
        "exam": [
            "Your HbA1c is 7.1 percent on two tests, kidney function and urine protein are normal, and your foot exam is normal.",
            "Fasting glucose was 142 and the A1c is 7.0 percent, with a normal eye screen and normal sensation in the feet.",
            "The A1c is 6.9 percent, repeated and confirmed, and there are no signs of eye, kidney or nerve damage.",
        ],
        "assess": [
            "This is type 2 diabetes without complications; we'll start with diet, exercise and metformin.",
            "You have type 2 diabetes, caught early, with no organ damage so far.",
        ],
    },
    "E78.5": {
        "dur": ["my screening blood test", "last month's check", "the work health check"],
        "complaint": [
            "My cholesterol came back high on {dur}.",
            "I was told my lipids were raised at {dur} and wanted to discuss it.",
            "I'm here to talk about the high fats in my blood from {dur}.",
        ],
        "history": [
            ("Any chest pain or history of heart disease?", "No, none."),
            ("What is your diet like?", "A lot of red meat, cheese and fried food, honestly."),
            (
                "Does anyone in your family have heart problems?",
                "My uncle had a heart attack in his sixties.",
            ),
            ("Do you smoke?", "No, never."),
        ],
        "exam": [
            "Your LDL is 182 and total cholesterol is 268, with normal thyroid and liver tests.",
            "The fasting lipid panel shows raised LDL cholesterol and triglycerides, and your blood pressure is normal.",
            "Total cholesterol is 251 with an LDL of 170, and your sugar and thyroid are normal.",
        ],
        "assess": [
            "You have hyperlipidemia, raised blood fats; we'll start with diet and exercise and consider a statin.",
            "This is high cholesterol, and we'll calculate your heart risk to decide about medicine.",
        ],
    },
    "E03.9": {
        "dur": ["several months", "about half a year", "the past few months"],
        "complaint": [
            "I've been exhausted and cold all the time for {dur}.",
            "I've gained weight, my skin is dry and I feel sluggish, it's been {dur}.",
            "For {dur} I've felt slow, constipated and my hair is thinning.",
        ],
        "history": [
            ("Any changes in your mood or memory?", "I've been feeling low and a bit foggy."),
            ("Have you had thyroid problems or neck surgery?", "No, never."),
            ("Does anyone in your family have thyroid disease?", "My sister takes a thyroid tablet."),
            ("Has your appetite changed?", "Not really, but the scale keeps going up."),
        ],
        "exam": [
            "Your TSH is high at 11 and free T4 is low, your pulse is a little slow and the skin is dry.",
            "Blood tests show a raised TSH with a low thyroxine level; the thyroid is not enlarged.",
            "Your heart rate is 56, reflexes are slow to relax, and the TSH is elevated with a low T4.",
        ],
        "assess": [
            "This is an underactive thyroid, hypothyroidism, and we'll start daily thyroid hormone replacement.",
            "The tests show hypothyroidism, which explains the tiredness and feeling cold.",
        ],
    },
    "E66.9": {
        "dur": ["the last few years", "the past two years", "the past decade"],
        "complaint": [
            "I'd like help with my weight, it has crept up over {dur}.",
            "I've put on a lot of weight over {dur} and I get tired easily.",
            "I want to lose weight; it's been going up steadily over {dur}.",
        ],
        "history": [
            (
                "What does a typical day of eating look like?",
                "Big portions, snacks in the evening and sugary drinks.",
            ),
            ("How much exercise do you get?", "Hardly any, I drive everywhere."),
            ("Any snoring or daytime sleepiness?", "Some snoring, my partner says."),
            ("Have you tried losing weight before?", "A few diets, but the weight came back."),
        ],
        "exam": [
            "Your weight is 104 kg at 1.75 m, a BMI of 34, and your blood sugar and thyroid tests are normal.",
            "Your BMI is 32 and waist is 108 centimetres; blood pressure, glucose and thyroid function are normal.",
            "The BMI today is 33, and your labs show no diabetes or thyroid problem.",
        ],
        "assess": [
            "This is obesity, and we'll set up a plan for diet, activity and follow-up support.",
            "Your weight is in the obese range, so let's agree on small, lasting changes and review in three months.",
        ],
    },
    "E55.9": {
        "dur": ["a few months", "most of the winter", "several weeks"],
        "complaint": [
            "I've felt tired with achy bones for {dur}, and I was told to check my vitamin D.",
            "My muscles ache and I feel weak, it's been {dur}.",
            "I'm here for my blood results; I've been low on energy for {dur}.",
        ],
        "history": [
            ("How much time do you spend outdoors?", "Very little, I work nights and sleep in the day."),
            ("Do you eat oily fish, eggs or fortified foods?", "Not really."),
            ("Any broken bones recently?", "No."),
            ("Do you take any supplements?", "None."),
        ],
        "exam": [
            "Your 25-hydroxy vitamin D level is 14 ng/mL, which is low, and calcium and kidney tests are normal.",
            "The blood test shows a low vitamin D of 12 ng/mL, with normal calcium and thyroid results.",
            "Vitamin D came back at 15 ng/mL, below the normal range, and the rest of your blood work is fine.",
        ],
        "assess": [
            "This is vitamin D deficiency, and we'll start a supplement and recheck the level in three months.",
            "Your vitamin D is deficient, which can cause aches and tiredness.",
        ],
    },
    "D50.9": {
        "dur": ["a couple of months", "several weeks", "about two months"],
        "sexes": ["woman"],
        "complaint": [
            "I've been tired and short of breath on the stairs for {dur}.",
            "People say I look pale and I feel weak, it's been {dur}.",
            "I get dizzy when I stand and feel worn out, for {dur}.",
        ],
        "history": [
            ("Are your periods heavy?", "Yes, they're heavy and last about a week."),
            ("Any black stools or blood in the stool?", "No, nothing like that."),
            ("Do you eat meat or other iron-rich foods?", "I'm vegetarian and don't eat many beans."),
            ("Any cravings for ice?", "Actually yes, I chew ice a lot."),
        ],
        "exam": [
            "Your haemoglobin is 9.8, the red cells are small, and ferritin is very low.",
            "You look pale, the blood count shows a low haemoglobin with small red cells, and your iron stores are low.",
            "Haemoglobin is 10.1 with a low MCV and a ferritin of 6.",
        ],
        "assess": [
            "This is iron deficiency anemia; we'll start iron tablets and look into the cause of the iron loss.",
            "The results show anemia from low iron, which explains the tiredness.",
        ],
    },
    "K21.9": {
        "dur": ["a few months", "several weeks", "most of this year"],
        "complaint": [
            "I get a burning feeling behind my breastbone after meals, it's been {dur}.",
            "I've had heartburn most nights for {dur}, worse when I lie down.",
            "Acid keeps coming up into my throat and I get a sour taste, for {dur}.",
        ],
        "history": [
            ("Any trouble swallowing or weight loss?", "No, I'm eating normally."),
            ("Any black stools or vomiting blood?", "No."),
            ("Do antacids help?", "Yes, they help for a while."),
            ("Does it happen with exertion, like walking uphill?", "No, only after food or lying down."),
        ],
        "exam": [
            "Your abdomen is soft with no tenderness, and there are no warning signs such as weight loss or anaemia.",
            "The exam is normal, your heart tracing is normal, and the symptoms follow meals and lying flat.",
            "There's mild tenderness just under the breastbone and no alarm features.",
        ],
        "assess": [
            "This is gastro-esophageal reflux disease; we'll try an acid-reducing medicine and lifestyle changes.",
            "Your symptoms are typical of acid reflux, with no sign of damage to the oesophagus.",
        ],
    },
    "K59.00": {
        "dur": ["a few weeks", "about a month", "several weeks"],
        "complaint": [
            "I only go to the toilet every four or five days, and it's been like this for {dur}.",
            "My stools are hard and I have to strain, for {dur} now.",
            "I feel bloated and blocked up, it's been {dur}.",
        ],
        "history": [
            ("Any blood in the stool or weight loss?", "No, none of that."),
            (
                "How much fibre and water do you have?",
                "Not much, I eat a lot of white bread and drink mostly coffee.",
            ),
            ("Any new medicines?", "No new medicines."),
            ("Does the bloating go away after a bowel movement?", "Mostly, yes."),
        ],
        "exam": [
            "Your abdomen is soft, mildly full on the left side, and there's no tenderness or mass.",
            "The abdominal exam is normal apart from some stool felt in the lower bowel, and your thyroid test is normal.",
            "Your belly is soft and non-tender with normal bowel sounds.",
        ],
        "assess": [
            "This is constipation, so more fibre, fluids and activity plus a gentle laxative for now should help.",
            "You have simple constipation without warning signs.",
        ],
    },
    "A09": {
        "dur": ["two days", "a day", "a day and a half"],
        "complaint": [
            "I've had diarrhoea and vomiting for {dur}.",
            "I've been running to the toilet with watery stools and cramps for {dur}.",
            "I've had a fever, stomach cramps and diarrhoea for {dur}.",
        ],
        "history": [
            ("Has anyone else been sick?", "Yes, a few people at my child's school had a stomach bug."),
            ("Any blood in the stool?", "No blood."),
            ("Are you able to keep fluids down?", "Small sips, yes."),
            ("Did you eat anything unusual?", "We had a buffet at a party the day before."),
        ],
        "exam": [
            "Your temperature is 38.1, the belly is mildly tender all over with active bowel sounds, and you're slightly dry.",
            "You're mildly dehydrated, the abdomen is soft with diffuse mild tenderness, and there's no guarding.",
            "Your heart rate is a little fast, the abdomen is soft, and there's no sign of surgical problem.",
        ],
        "assess": [
            "This is infectious gastroenteritis, a stomach bug; the key is rehydration with small frequent sips.",
            "It's an infection of the gut, and it should settle in a few days with fluids and rest.",
        ],
    },
    "K64.9": {
        "dur": ["a week", "two weeks", "a few days"],
        "complaint": [
            "I've noticed bright red blood on the toilet paper for {dur}.",
            "There's a painful lump around my back passage, it's been {dur}.",
            "It itches and bleeds a little when I go to the toilet; it's been {dur}.",
        ],
        "history": [
            ("Have you been straining or constipated?", "Yes, I've been constipated lately."),
            ("Is the blood mixed in the stool or on the paper?", "Just on the paper and in the bowl."),
            ("Any weight loss or change in bowel habit?", "No."),
            ("Any family history of bowel cancer?", "No."),
        ],
        "exam": [
            "There are swollen hemorrhoidal veins at the anal opening, and the rest of the exam is normal.",
            "On examination I can see hemorrhoids with a small amount of bleeding, and there is no mass.",
            "There are enlarged hemorrhoids, no fissure, and your blood count is normal.",
        ],
        "assess": [
            "These are hemorrhoids, swollen veins in the back passage; fibre, fluids and a soothing cream should help.",
            "The bleeding comes from piles, which usually settle when constipation is treated.",
        ],
    },
    "N20.0": {
        "dur": ["about six hours", "two days", "a day"],
        "complaint": [
            "I've had terrible pain in my side and back, coming in waves, for {dur}.",
            "My flank hurts badly and I saw some pink in my urine; it's been {dur}.",
            "I have had severe pain below my ribs on one side for {dur}, and I feel sick.",
        ],
        "history": [
            ("Any fever or chills?", "No fever."),
            ("Have you had kidney stones before?", "Once, about five years ago."),
            ("How much water do you drink?", "Not much, maybe two glasses a day."),
            ("Does the pain spread anywhere?", "Sometimes towards my groin."),
        ],
        "exam": [
            "There's tenderness in the flank, blood in the urine dip, and the CT scan shows a 5 mm stone in the kidney.",
            "The urine shows red cells without infection, and the scan shows a stone sitting in the left kidney.",
            "Your kidney function is normal, and the CT shows a small calculus in the right kidney with no blockage.",
        ],
        "assess": [
            "This is a kidney stone; we'll manage the pain, have you drink plenty of fluids and strain your urine.",
            "The scan confirms a stone in the kidney, which is likely to pass or can be treated if it doesn't.",
        ],
    },
    "K80.20": {
        "dur": ["a few weeks", "a couple of months", "several weeks"],
        "complaint": [
            "I get pain in the upper right part of my belly after fatty meals, it's been {dur}.",
            "For {dur} I've had episodes of upper tummy pain that go to my right shoulder.",
            "After dinner I sometimes get a strong ache under my right ribs, for {dur}.",
        ],
        "history": [
            ("How long do the episodes last?", "An hour or two, then they go away."),
            ("Any fever, yellow skin or dark urine?", "No, none of that."),
            ("Is it painful right now?", "No, I'm fine between attacks."),
            ("Any vomiting?", "Sometimes nausea during the pain."),
        ],
        "exam": [
            "Your belly is soft and not tender today, liver tests are normal, and the ultrasound shows gallstones with a normal gallbladder wall and no duct widening.",
            "The ultrasound shows several stones in the gallbladder without inflammation, and the bile duct is normal.",
            "There's no fever or jaundice, blood tests are normal, and the scan shows gallstones but no signs of infection or blockage.",
        ],
        "assess": [
            "These are gallstones causing attacks of biliary pain, with no inflammation; we'll refer you to discuss removing the gallbladder.",
            "You have gallstones without infection or blockage, and a low-fat diet may reduce the attacks.",
        ],
    },
    "N39.0": {
        "dur": ["two days", "a day", "three days"],
        "sexes": ["woman"],
        "complaint": [
            "It burns when I pee and I have to go all the time, for {dur}.",
            "I've had stinging when passing urine and cloudy urine for {dur}.",
            "I keep needing to urinate urgently and it hurts, it's been {dur}.",
        ],
        "history": [
            ("Any fever or back pain?", "No, just lower tummy discomfort."),
            ("Any unusual vaginal discharge?", "No."),
            ("Any chance you could be pregnant?", "No, I'm not pregnant."),
            ("Have you had this before?", "Once, a couple of years ago."),
        ],
        "exam": [
            "Your urine dip is positive for nitrites and white cells, and you have no fever or kidney tenderness.",
            "The urine test shows leukocytes and nitrites, and there's mild tenderness above the pubic bone.",
            "Temperature is normal and the urine sample shows signs of a bacterial infection.",
        ],
        "assess": [
            "This is a urinary tract infection; I'll prescribe a short course of antibiotics and send the urine for culture.",
            "You have a urine infection, which should clear quickly with antibiotics and fluids.",
        ],
    },
    "M54.50": {
        "dur": ["a week", "five days", "ten days"],
        "complaint": [
            "My lower back has been aching for {dur}.",
            "I hurt my lower back lifting boxes, {dur} ago.",
            "I've had stiffness and pain low in my back for {dur}.",
        ],
        "history": [
            ("Does the pain go down either leg?", "No, it stays in my lower back."),
            ("Any numbness in the groin or trouble with bladder or bowels?", "No, nothing like that."),
            ("Any fever, weight loss or history of cancer?", "No."),
            ("Does movement make it worse?", "Bending forward is the worst."),
        ],
        "exam": [
            "The muscles beside your lower spine are tender, leg strength and reflexes are normal, and the straight-leg raise is negative.",
            "There is reduced bending due to pain, the nerve exam in your legs is normal, and there are no red flags.",
            "Tender lumbar muscles, normal sensation and power in both legs.",
        ],
        "assess": [
            "This is low back pain from a muscle strain; stay active, use heat and simple pain relief.",
            "It's non-specific low back pain, which usually improves within a few weeks.",
        ],
    },
    "M17.9": {
        "dur": ["a couple of years", "several years", "the past year"],
        "ages": (50, 85),
        "complaint": [
            "My knee aches when I walk and it's been getting worse over {dur}.",
            "My knee is stiff in the morning and creaks on the stairs, for {dur}.",
            "I've had knee pain after walking for {dur}.",
        ],
        "history": [
            ("How long does the morning stiffness last?", "About fifteen minutes, then it loosens up."),
            ("Any injury to the knee?", "No injury that I remember."),
            ("Any swelling, redness or fever?", "It swells a little after a long walk, no fever."),
            ("Does rest help?", "Yes, rest makes it better."),
        ],
        "exam": [
            "There's crepitus when the knee bends, bony enlargement, and the X-ray shows joint space narrowing and bone spurs.",
            "The knee has a mild effusion and reduced bending, and the X-ray shows degenerative changes with osteophytes.",
            "You have crepitus and tenderness along the joint line, and the X-ray confirms wear of the cartilage.",
        ],
        "assess": [
            "This is osteoarthritis of the knee; exercise, weight control and pain relief are the main treatment.",
            "The X-ray shows wear-and-tear arthritis of the knee.",
        ],
    },
    "M10.9": {
        "dur": ["last night", "yesterday", "two days ago"],
        "ages": (35, 80),
        "sexes": ["man"],
        "complaint": [
            "My big toe became red, swollen and extremely painful {dur}.",
            "I woke up with agonising pain in my big toe joint; it started {dur}.",
            "Even the bedsheet touching my toe hurts, it began {dur}.",
        ],
        "history": [
            ("Have you had this before?", "Something similar last year that went away in a week."),
            ("How much alcohol and red meat do you have?", "A few beers most nights and a lot of steak."),
            ("Any injury to the toe?", "No injury."),
            ("Are you taking water tablets?", "Yes, one for blood pressure."),
        ],
        "exam": [
            "The joint at the base of your big toe is hot, red and very tender, and your uric acid level is high.",
            "There's marked swelling and redness of the big toe joint, and fluid from the joint shows needle-shaped crystals.",
            "Your big toe joint is inflamed and exquisitely tender, with a raised uric acid on the blood test.",
        ],
        "assess": [
            "This is gout; we'll treat the flare with an anti-inflammatory and talk about lowering your uric acid.",
            "It's a gout attack caused by uric acid crystals in the joint.",
        ],
    },
    "G56.00": {
        "dur": ["a few months", "several weeks", "about three months"],
        "complaint": [
            "My thumb and first two fingers go numb and tingly, especially at night, for {dur}.",
            "I wake up with my hand asleep and I have to shake it out; this has been going on for {dur}.",
            "I keep dropping things and my fingers tingle, it's been {dur}.",
        ],
        "history": [
            ("Does your little finger tingle too?", "No, it's mostly the thumb, index and middle fingers."),
            ("What kind of work do you do?", "I type all day and use a mouse a lot."),
            ("Any neck pain?", "No neck pain."),
            ("Does anything help?", "Shaking my hand or hanging it down helps."),
        ],
        "exam": [
            "Tapping over your wrist reproduces the tingling, and bending the wrist for a minute brings it on too.",
            "Tinel's and Phalen's tests are positive, with reduced sensation in the thumb, index and middle fingers.",
            "There's mild weakness of thumb movement and positive wrist provocation tests; the nerve study confirms median nerve compression at the wrist.",
        ],
        "assess": [
            "This is carpal tunnel syndrome; a wrist splint at night is the first step.",
            "The median nerve is being squeezed at the wrist, carpal tunnel syndrome.",
        ],
    },
    "S93.401A": {
        "dur": ["yesterday", "this morning", "last night"],
        "ages": (15, 55),
        "complaint": [
            "I rolled my right ankle playing football {dur}.",
            "I twisted my right ankle stepping off a curb {dur} and it's swollen.",
            "My right ankle went over while I was running {dur} and it hurts to walk.",
        ],
        "history": [
            ("Could you walk on it straight after?", "Yes, with a limp."),
            ("Did you hear a crack?", "No crack, just a sharp pain."),
            ("Have you injured this ankle before?", "No, this is the first time."),
            ("Any numbness in the foot?", "No, I can feel everything."),
        ],
        "exam": [
            "The outside of your right ankle is swollen and bruised, the bones are not tender, and the X-ray shows no fracture.",
            "There's tenderness over the ligaments of the right ankle, no bony tenderness, and you can take four steps.",
            "Your right ankle is swollen with bruising, and the X-ray is normal.",
        ],
        "assess": [
            "This is a sprain of the right ankle; rest, ice, compression and elevation for the first few days.",
            "You've sprained the ligaments of your right ankle, with no broken bone.",
        ],
    },
    "F41.1": {
        "dur": ["over a year", "at least six months", "most of the past year"],
        "complaint": [
            "I worry constantly about everything, work, money, my family, and it's been {dur}.",
            "I can't switch off my mind and I feel on edge all the time, for {dur}.",
            "I've been tense and worried nearly every day for {dur}.",
        ],
        "history": [
            ("How is your sleep?", "I struggle to fall asleep because my mind races."),
            ("Any sudden attacks of intense fear?", "Not attacks, it's more a constant worry."),
            ("Any thoughts of harming yourself?", "No, never."),
            ("Any physical symptoms?", "Tight shoulders, tiredness and trouble concentrating."),
        ],
        "exam": [
            "Your anxiety questionnaire score is 15, your thyroid test is normal, and you're not using caffeine or drugs heavily.",
            "You appear tense but well, the screening questionnaire shows moderate to severe anxiety, and blood tests are normal.",
            "The GAD-7 score is 14, and there is no sign of a medical cause.",
        ],
        "assess": [
            "This is generalized anxiety disorder; talking therapy and possibly a medicine can help a lot.",
            "Your symptoms fit generalized anxiety, excessive worry that is hard to control.",
        ],
    },
    "F32.A": {
        "dur": ["the past month", "several weeks", "about two months"],
        "complaint": [
            "I've been feeling down and flat for {dur}.",
            "I've lost interest in things I used to enjoy over {dur}.",
            "I've felt sad, tired and unmotivated for {dur}.",
        ],
        "history": [
            ("How are your sleep and appetite?", "I sleep badly and I'm not hungry."),
            ("Any thoughts of harming yourself?", "No, I wouldn't do that."),
            ("Have you ever had periods of very high energy or little need for sleep?", "No, never."),
            ("Has anything changed in your life recently?", "I lost my job a few months ago."),
        ],
        "exam": [
            "Your mood questionnaire score is 13, your thyroid and blood count are normal, and you have no safety concerns.",
            "You look low in mood with a flat expression, and the depression screening score is raised.",
            "The PHQ-9 score is 12 and the blood tests are normal.",
        ],
        "assess": [
            "This is depression; we'll start with talking therapy and review in two weeks.",
            "Your symptoms point to depression, and we'll make a plan together.",
        ],
    },
    "G47.00": {
        "dur": ["three months", "several months", "about four months"],
        "complaint": [
            "I can't fall asleep at night and I've been like this for {dur}.",
            "I wake up at 3 am and can't get back to sleep, for {dur}.",
            "I'm exhausted because I barely sleep, it's been {dur}.",
        ],
        "history": [
            ("Does your partner say you snore or stop breathing?", "No, no snoring."),
            ("How much caffeine do you have?", "A couple of coffees in the morning."),
            ("How is your mood?", "Fine, just frustrated about the sleep."),
            ("Do you use screens in bed?", "Yes, I scroll on my phone until late."),
        ],
        "exam": [
            "Your exam is normal, the sleep diary shows less than five hours a night, and there are no signs of sleep apnoea.",
            "Everything looks normal on examination, and your thyroid test is normal.",
            "Physical exam and blood tests are normal, and there is no sign of another sleep disorder.",
        ],
        "assess": [
            "This is insomnia; a regular sleep routine and cognitive behavioural therapy for insomnia work best.",
            "You have insomnia, trouble getting and staying asleep, so let's work on sleep habits.",
        ],
    },
    "F17.210": {
        "dur": ["twenty years", "fifteen years", "over ten years"],
        "ages": (35, 70),
        "complaint": [
            "I want to quit smoking; I've smoked a pack of cigarettes a day for {dur}.",
            "I need help stopping cigarettes, I've smoked for {dur}.",
            "I smoke about twenty cigarettes a day and have done for {dur}; I'd like to stop.",
        ],
        "history": [
            ("How soon after waking do you have your first cigarette?", "Within five minutes."),
            ("Have you tried to quit before?", "Twice, but the cravings were too strong."),
            ("Do you get irritable if you can't smoke?", "Very, and I can't concentrate."),
            ("Do you use vapes or other tobacco?", "No, just cigarettes."),
        ],
        "exam": [
            "Your lungs are clear, blood pressure is normal, and your carbon monoxide breath reading is high.",
            "The chest exam is normal and your breath test confirms heavy smoking.",
            "You have nicotine-stained fingers, clear lungs and a raised exhaled carbon monoxide.",
        ],
        "assess": [
            "You're dependent on nicotine from cigarettes; let's set a quit date and combine support with nicotine replacement.",
            "This is cigarette nicotine dependence, and medicine plus counselling doubles your chances of quitting.",
        ],
    },
    "G43.909": {
        "dur": ["years", "several years", "over ten years"],
        "complaint": [
            "I get throbbing headaches on one side with nausea, and I've had them for {dur}.",
            "I've had bad headaches where light and noise bother me, on and off for {dur}.",
            "A few times a month I get a pounding headache that makes me lie in a dark room; it's been {dur}.",
        ],
        "history": [
            ("How long does a headache last?", "Most of a day, sometimes into the next."),
            ("Do painkillers help?", "If I take them early, they help."),
            (
                "Is this the worst headache of your life, or did it come on suddenly?",
                "No, it's my usual kind of headache.",
            ),
            ("Any triggers?", "Lack of sleep, skipping meals and bright screens."),
        ],
        "exam": [
            "Your neurological exam is completely normal, blood pressure is fine, and the headaches follow a typical pattern.",
            "Eye movements, strength, reflexes and the back of the eyes are all normal.",
            "There are no abnormal neurological signs, and there is no fever or neck stiffness.",
        ],
        "assess": [
            "These are migraines; we'll plan treatment for attacks and keep a headache diary.",
            "Your headaches fit migraine, and we can use medicines that work early in an attack.",
        ],
    },
    "G44.209": {
        "dur": ["a few weeks", "a couple of months", "the past month"],
        "complaint": [
            "I get a tight band-like headache across my forehead most afternoons, for {dur}.",
            "I've had a dull, pressing headache on both sides of my head for {dur}.",
            "My head feels squeezed by the end of the workday, it's been {dur}.",
        ],
        "history": [
            ("Any nausea or sensitivity to light?", "No, none."),
            ("Is it throbbing or more of a pressure?", "More a constant pressure."),
            ("How are your stress levels and sleep?", "Work is stressful and I sleep about six hours."),
            ("Do painkillers help?", "Yes, ordinary painkillers take the edge off."),
        ],
        "exam": [
            "Your neck and shoulder muscles are tight and tender, and the neurological exam is normal.",
            "There's tenderness of the scalp muscles, normal blood pressure, and no abnormal neurological signs.",
            "The exam is normal apart from tight trapezius muscles.",
        ],
        "assess": [
            "This is a tension-type headache; regular breaks, sleep, stress management and simple pain relief should help.",
            "These are tension headaches linked to muscle tension and stress.",
        ],
    },
    "L20.9": {
        "dur": ["a few weeks", "a couple of months", "about a month"],
        "complaint": [
            "I've had dry, itchy patches in the creases of my elbows for {dur}.",
            "My skin is itchy, red and flaky behind my knees, it's been {dur}.",
            "I keep scratching rough patches on my arms and neck, for {dur}.",
        ],
        "history": [
            ("Do you have asthma or hay fever?", "Yes, hay fever every spring."),
            ("What makes it worse?", "Hot showers, wool and stress."),
            ("Does it ever blister or weep?", "It weeps a little when I scratch."),
            ("What do you use to wash?", "Regular perfumed soap."),
        ],
        "exam": [
            "There are dry, thickened, red patches in the elbow and knee creases with scratch marks.",
            "You have lichenified eczema patches at the flexures and generally dry skin.",
            "The skin shows ill-defined scaly red plaques in the skin folds with excoriations.",
        ],
        "assess": [
            "This is atopic dermatitis, eczema; daily moisturiser and a steroid cream for flares should help.",
            "Your rash is eczema, so let's protect the skin barrier and calm the flare.",
        ],
    },
    "B35.1": {
        "dur": ["a year", "several months", "a couple of years"],
        "complaint": [
            "My big toenail has gone thick and yellow over {dur}.",
            "Some of my toenails are crumbly and discoloured, it's been {dur}.",
            "My toenails have become thick and hard to cut over {dur}.",
        ],
        "history": [
            ("Do you get athlete's foot?", "Yes, I've had it on and off."),
            ("Is the nail painful?", "Only when my shoes are tight."),
            ("Do you use communal showers?", "At the gym, yes."),
            ("Any diabetes or circulation problems?", "No."),
        ],
        "exam": [
            "The toenails are thickened, yellow and crumbly, and the nail clipping confirms a fungal infection.",
            "There's yellow discoloration with debris under the nails, and the lab found fungal hyphae.",
            "Two toenails are discoloured and brittle, and the fungal culture is positive.",
        ],
        "assess": [
            "This is a fungal nail infection; treatment is slow and may need an antifungal tablet or lacquer.",
            "You have fungus in the toenails, which can take months to clear.",
        ],
    },
    "B35.3": {
        "dur": ["a few weeks", "a month", "two weeks"],
        "complaint": [
            "The skin between my toes is itchy, peeling and cracked, for {dur}.",
            "My feet itch and there's white soggy skin between my toes, it's been {dur}.",
            "I've had a burning, scaly rash on the soles of my feet for {dur}.",
        ],
        "history": [
            ("Do your feet get sweaty?", "Yes, I wear trainers all day."),
            ("Do you use shared showers?", "At the swimming pool."),
            ("Are your toenails affected?", "No, the nails look normal."),
            ("Any spreading redness or fever?", "No."),
        ],
        "exam": [
            "There's scaling and white macerated skin between the toes with a little redness.",
            "The web spaces between the fourth and fifth toes are cracked and peeling, and the skin scraping shows fungus.",
            "There's fine scaling on the soles and between the toes, consistent with a fungal infection.",
        ],
        "assess": [
            "This is athlete's foot; an antifungal cream and keeping the feet dry will clear it.",
            "It's a fungal infection of the skin of the feet.",
        ],
    },
    "L70.0": {
        "dur": ["a year", "two years", "several months"],
        "ages": (14, 26),
        "complaint": [
            "I've had spots and blackheads on my face for {dur}.",
            "My forehead and chin keep breaking out in pimples, it's been {dur}.",
            "I get pimples on my face and back and it's been going on for {dur}.",
        ],
        "history": [
            ("What have you tried?", "Face washes from the shop, but they didn't help much."),
            ("Is it leaving marks or scars?", "Some dark marks."),
            ("Does it affect how you feel?", "I feel self-conscious about it."),
            ("Any other medicines?", "No."),
        ],
        "exam": [
            "There are blackheads, whiteheads and inflamed papules on the forehead, cheeks and chin.",
            "You have comedones and some pustules on the face and upper back, without deep cysts.",
            "There are open and closed comedones with scattered red papules.",
        ],
        "assess": [
            "This is acne vulgaris, common acne; a topical retinoid and benzoyl peroxide are a good start.",
            "It's typical acne, and treatment usually takes six to eight weeks to show results.",
        ],
    },
    "B02.9": {
        "dur": ["three days", "two days", "four days"],
        "ages": (50, 85),
        "complaint": [
            "I've had a painful blistering rash on one side of my chest for {dur}.",
            "There's a burning band of pain and blisters around my side, it started {dur} ago.",
            "My skin tingled on the left of my back and then blisters came up; it's been {dur}.",
        ],
        "history": [
            ("Have you had chickenpox?", "Yes, as a child."),
            ("Any rash near your eye or on your face?", "No, just the chest and back."),
            ("Any problems with your immune system?", "No."),
            ("Does it cross the middle of your body?", "No, it stops at the middle."),
        ],
        "exam": [
            "There are clusters of fluid-filled blisters on a red base in a band on one side of the chest, not crossing the midline.",
            "The rash follows a single nerve band on the trunk, with grouped vesicles, and the eyes are not involved.",
            "You have grouped blisters along one dermatome and no eye or nerve complications.",
        ],
        "assess": [
            "This is shingles; antiviral tablets now and pain relief should help.",
            "The rash is herpes zoster, shingles, without complications.",
        ],
    },
    "L03.115": {
        "dur": ["two days", "three days", "a day"],
        "complaint": [
            "My right lower leg has become red, hot and swollen over {dur}.",
            "I scratched my right shin and now the skin around it is red and painful, for {dur}.",
            "There's a spreading red area on my right leg, it's been {dur}.",
        ],
        "history": [
            ("Any fever or chills?", "I felt feverish last night."),
            ("Is the redness spreading?", "Yes, it's bigger than yesterday."),
            ("Any calf pain or recent long travel?", "No travel."),
            ("Do you have diabetes?", "No."),
        ],
        "exam": [
            "The right lower leg is warm, red and tender with poorly defined edges and no pus pocket.",
            "There's spreading redness and swelling of the right shin with a small entry wound, temperature 38.0.",
            "The skin of the right leg is red, hot and swollen, and the ultrasound shows no clot.",
        ],
        "assess": [
            "This is cellulitis, a skin infection of the right leg; you need antibiotics and we'll mark the edge of the redness.",
            "It's a bacterial skin infection of the right lower leg.",
        ],
    },
    "L50.9": {
        "dur": ["a day", "two days", "a few hours"],
        "complaint": [
            "I've had itchy raised welts all over for {dur}.",
            "I have an itchy rash of red bumps that move around, it's been {dur}.",
            "Itchy swollen patches keep appearing on my arms and trunk, for {dur}.",
        ],
        "history": [
            ("Any swelling of the lips or tongue or trouble breathing?", "No, breathing is fine."),
            ("Did you start any new foods or medicines?", "Not that I can think of."),
            ("Do the individual spots fade within a day?", "Yes, they come and go within hours."),
            ("Any recent illness?", "I had a cold last week."),
        ],
        "exam": [
            "There are raised pale-centred wheals on the trunk and arms, the airway is clear and vital signs are normal.",
            "You have widespread hives, no swelling of the mouth, and normal breathing.",
            "There are blanching raised welts of different sizes, with no signs of anaphylaxis.",
        ],
        "assess": [
            "This is urticaria, hives; an antihistamine should settle it.",
            "The rash is hives, and we may never find a specific trigger.",
        ],
    },
    "H10.9": {
        "dur": ["two days", "a day", "three days"],
        "complaint": [
            "My eye is red and gritty with sticky discharge, it's been {dur}.",
            "I woke up {dur} ago with my eyelids stuck together and a pink eye.",
            "My eyes are red and watery, for {dur}.",
        ],
        "history": [
            ("Any pain or blurred vision?", "No, just irritated."),
            ("Do you wear contact lenses?", "No."),
            ("Has anyone around you had pink eye?", "My son had it last week."),
            ("Any sensitivity to light?", "No."),
        ],
        "exam": [
            "The white of the eye is red with discharge, vision is normal, and the cornea is clear.",
            "There's redness of the conjunctiva, normal pupils and normal vision.",
            "Your conjunctiva is inflamed, with no pain on eye movement and normal visual acuity.",
        ],
        "assess": [
            "This is conjunctivitis, pink eye; clean the eyelids and avoid sharing towels.",
            "It's an inflammation of the eye's surface, conjunctivitis, which usually settles in a week or two.",
        ],
    },
    "H66.90": {
        "dur": ["two days", "a day", "three days"],
        "ages": (18, 45),
        "complaint": [
            "I've had ear pain and muffled hearing for {dur}, after a cold.",
            "My ear aches and feels full, it's been {dur}.",
            "I've had a throbbing earache and a fever for {dur}.",
        ],
        "history": [
            ("Any discharge from the ear?", "No discharge."),
            ("Have you been swimming?", "No."),
            ("Any dizziness?", "Not really."),
            ("Did you have a cold recently?", "Yes, last week."),
        ],
        "exam": [
            "The eardrum is red and bulging with fluid behind it, and the ear canal is normal.",
            "There's a red, dull eardrum with reduced movement, and the outer ear canal is fine.",
            "Otoscopy shows an inflamed eardrum with a fluid level behind it.",
        ],
        "assess": [
            "This is a middle ear infection, otitis media; pain relief first, and antibiotics if it doesn't improve.",
            "It's an infection behind the eardrum after your cold.",
        ],
    },
    "H61.23": {
        "dur": ["a few weeks", "a month", "two weeks"],
        "ages": (40, 85),
        "complaint": [
            "Both my ears feel blocked and my hearing is worse, for {dur}.",
            "My hearing has dropped in both ears over {dur}.",
            "Both ears feel full and I hear a bit of ringing, it's been {dur}.",
        ],
        "history": [
            ("Do you use cotton buds?", "Yes, every day."),
            ("Any pain or discharge?", "No pain, no discharge."),
            ("Any dizziness?", "No."),
            ("Do you wear hearing aids?", "No."),
        ],
        "exam": [
            "Both ear canals are completely blocked with hard wax, so I can't see either eardrum.",
            "There is impacted earwax filling both ear canals.",
            "Both canals have firm wax plugs obstructing the view of the drums.",
        ],
        "assess": [
            "This is impacted earwax in both ears; softening drops and then irrigation should restore your hearing.",
            "Wax is blocking both ears, which explains the muffled hearing.",
        ],
    },
}
