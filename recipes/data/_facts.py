"""Hand-written fact tables for the medical Q&A demo set (recipes/data/medqa_demo.jsonl).

Written for this project as general, textbook-level health information. Every answer restates its
subject first so that a small model can learn a consistent style. This is demo data, not medical advice.

CONDITIONS maps a condition to the phrase used inside questions ("q"), a topic, and one answer per
aspect (what, symptoms, causes, risk, complications, diagnosis, treatment, prevention, doctor);
"plural" marks plural subjects and "ask_<aspect>" fixes the question where the generic ones do not fit. GENERAL holds
stand-alone (question, answer, topic) triples for first aid, nutrition, anatomy, medicines and screening.
"""

from __future__ import annotations

CONDITIONS: dict[str, dict[str, str]] = {
    "common cold": {
        "q": "the common cold",
        "topic": "respiratory",
        "what": "The common cold is a mild viral infection of the nose and throat. It is most often caused by rhinoviruses and usually gets better on its own within 7 to 10 days.",
        "symptoms": "Common symptoms of the common cold include a runny or stuffy nose, sneezing, sore throat, cough, mild headache and tiredness. Fever, when present, is usually low, and symptoms tend to peak in the first two or three days.",
        "treatment": "The common cold has no cure, and antibiotics do not help because it is caused by viruses. Rest, fluids, saline nasal sprays and over-the-counter remedies for pain or congestion can ease symptoms while the body clears the infection.",
        "prevention": "The spread of the common cold can be reduced by washing hands often with soap and water, avoiding touching the eyes, nose and mouth, and staying away from people who are sick. Covering coughs and sneezes also protects others.",
        "doctor": "A cold usually does not need a doctor, but medical advice is worth seeking if symptoms last more than 10 days, a fever is high or lasts several days, breathing becomes difficult, or there is severe ear, sinus or throat pain.",
    },
    "influenza": {
        "q": "the flu",
        "ask_risk": "Who is at higher risk of complications from the flu?",
        "topic": "respiratory",
        "what": "Influenza, or the flu, is a contagious respiratory illness caused by influenza viruses. It usually comes on suddenly and is more severe than a common cold, and it can lead to pneumonia or hospital care in vulnerable people.",
        "symptoms": "Common symptoms of the flu include sudden fever or chills, cough, sore throat, muscle or body aches, headache and marked tiredness. Some people, especially children, also have vomiting or diarrhea.",
        "risk": "People at higher risk of flu complications include adults aged 65 and older, young children, pregnant women, and people with long-term conditions such as asthma, diabetes, heart disease or a weakened immune system.",
        "treatment": "The flu is usually managed with rest, fluids and medicines for fever and aches. Antiviral medicines prescribed by a doctor can shorten the illness and lower the risk of complications, and they work best when started within two days of symptoms.",
        "prevention": "The flu is best prevented with a yearly flu vaccine, which is recommended for most people aged 6 months and older. Regular handwashing, covering coughs and staying home when sick also reduce its spread.",
    },
    "asthma": {
        "q": "asthma",
        "ask_prevention": "How can asthma attacks be prevented?",
        "topic": "respiratory",
        "what": "Asthma is a long-term condition in which the airways of the lungs become inflamed and narrowed. This makes breathing harder at times and can cause attacks of wheezing and breathlessness, but with treatment most people lead normal, active lives.",
        "symptoms": "Common symptoms of asthma include wheezing, shortness of breath, chest tightness and coughing, often worse at night, early in the morning, or with exercise. Symptoms can come and go and may flare after exposure to a trigger.",
        "causes": "Asthma has no single cause, but genes and the environment both play a part. Attacks are often set off by triggers such as pollen, dust mites, pet dander, tobacco smoke, cold air, exercise and respiratory infections.",
        "treatment": "Asthma is usually treated with inhaled medicines. Reliever inhalers open the airways quickly during symptoms, while preventer inhalers, often containing a corticosteroid, reduce airway inflammation when taken every day, and a written action plan helps people know what to do.",
        "doctor": "An asthma attack is an emergency if a reliever inhaler does not help, speaking in full sentences is difficult, the lips or fingernails look blue, or breathing keeps getting worse. In that case, call emergency services right away.",
    },
    "COPD": {
        "q": "COPD",
        "topic": "respiratory",
        "what": "COPD, or chronic obstructive pulmonary disease, is a long-term lung disease that makes it hard to move air out of the lungs. It includes emphysema and chronic bronchitis and usually gets worse slowly over time.",
        "symptoms": "Common symptoms of COPD include shortness of breath, especially with activity, a long-lasting cough, coughing up mucus, wheezing and frequent chest infections. Symptoms can suddenly worsen during flare-ups.",
        "causes": "COPD is most often caused by long-term cigarette smoking. Other causes include years of exposure to second-hand smoke, air pollution, workplace dusts and fumes, and, rarely, an inherited condition called alpha-1 antitrypsin deficiency.",
        "diagnosis": "COPD is diagnosed with a breathing test called spirometry, which measures how much air a person can breathe out and how quickly. A doctor also considers symptoms, smoking history and sometimes a chest X-ray.",
        "treatment": "COPD cannot be cured, but treatment can ease symptoms and slow its progress. Stopping smoking is the most important step, and inhaled bronchodilators, pulmonary rehabilitation, vaccinations and sometimes oxygen therapy help people breathe and stay active.",
    },
    "pneumonia": {
        "q": "pneumonia",
        "topic": "respiratory",
        "what": "Pneumonia is an infection that inflames the air sacs in one or both lungs, which may fill with fluid or pus. It can be caused by bacteria, viruses or fungi and ranges from mild to life-threatening.",
        "symptoms": "Common symptoms of pneumonia include cough with phlegm, fever, chills, shortness of breath and chest pain that is worse when breathing in. Older adults may instead have confusion or a lower than normal body temperature.",
        "risk": "People at higher risk of pneumonia include adults over 65, children under 2, smokers, and people with chronic illnesses such as COPD, heart disease or diabetes, or with a weakened immune system.",
        "treatment": "Pneumonia caused by bacteria is treated with antibiotics, while viral pneumonia is managed with rest, fluids and sometimes antiviral medicine. Severe cases may need hospital care with oxygen or fluids given through a vein.",
        "prevention": "The risk of pneumonia can be lowered with vaccines against pneumococcal disease, flu and COVID-19, by not smoking, and by washing hands regularly. Managing long-term conditions well also helps.",
    },
    "acute bronchitis": {
        "q": "acute bronchitis",
        "topic": "respiratory",
        "what": "Acute bronchitis is a short-term inflammation of the large airways of the lungs, usually caused by a virus. It often follows a cold and causes a cough that can last up to three weeks.",
        "symptoms": "Common symptoms of acute bronchitis include a cough that may bring up clear, yellow or green mucus, chest discomfort, mild fever, tiredness and sometimes wheezing. The cough often lingers after the other symptoms settle.",
        "treatment": "Acute bronchitis usually gets better on its own, and antibiotics rarely help because most cases are viral. Rest, plenty of fluids, honey for cough in adults and children over one year, and pain relievers can ease symptoms.",
        "doctor": "For acute bronchitis, see a doctor if the cough lasts more than three weeks, there is a high fever, blood in the mucus, shortness of breath, or if you have a long-term heart or lung condition.",
    },
    "strep throat": {
        "q": "strep throat",
        "topic": "infections",
        "what": "Strep throat is a throat infection caused by group A Streptococcus bacteria. It is most common in children aged 5 to 15 and spreads through respiratory droplets and close contact.",
        "symptoms": "Common symptoms of strep throat include a sudden sore throat, pain when swallowing, fever, red swollen tonsils sometimes with white patches, and tender swollen glands in the neck. Cough and runny nose are usually absent.",
        "diagnosis": "Strep throat is diagnosed with a rapid strep test or a throat culture, both taken with a swab from the back of the throat. Symptoms alone cannot reliably tell strep apart from a viral sore throat.",
        "treatment": "Strep throat is treated with antibiotics, usually penicillin or amoxicillin, which shorten the illness and prevent rare complications such as rheumatic fever. The full course should be finished even if the person feels better.",
    },
    "sinusitis": {
        "q": "sinusitis",
        "topic": "respiratory",
        "what": "Sinusitis is inflammation of the sinuses, the air-filled spaces behind the forehead, cheeks and nose. Acute sinusitis usually follows a cold and is most often viral, clearing within a few weeks.",
        "symptoms": "Common symptoms of sinusitis include a blocked or runny nose, thick yellow or green mucus, pain or pressure around the eyes, cheeks or forehead, a reduced sense of smell and sometimes fever or toothache.",
        "treatment": "Sinusitis usually improves without antibiotics. Saline nasal rinses, steroid nasal sprays, pain relievers and rest can ease symptoms, and a doctor may prescribe antibiotics if a bacterial infection is likely.",
        "doctor": "For sinusitis, see a doctor if symptoms last more than 10 days or get worse after first improving, or urgently if there is swelling around the eyes, changes in vision, a severe headache or a stiff neck.",
    },
    "allergic rhinitis": {
        "q": "hay fever",
        "ask_prevention": "How can hay fever symptoms be reduced?",
        "topic": "respiratory",
        "what": "Hay fever, also called allergic rhinitis, is an allergic reaction in the nose to substances such as pollen, dust mites, mould or animal dander. It can be seasonal or last all year.",
        "symptoms": "Common symptoms of hay fever include sneezing, a runny or blocked nose, itchy nose, throat or eyes, and watery red eyes. Unlike a cold, it does not cause fever and lasts as long as the exposure continues.",
        "treatment": "Hay fever is treated by avoiding triggers where possible and with antihistamines, steroid nasal sprays or saline rinses. For severe allergies, a specialist may offer allergen immunotherapy to reduce sensitivity over time.",
        "prevention": "The symptoms of hay fever can be reduced by keeping windows closed on high-pollen days, showering and changing clothes after being outdoors, using allergen-proof bedding for dust mites, and keeping pets out of the bedroom.",
    },
    "high blood pressure": {
        "q": "high blood pressure",
        "topic": "heart and circulation",
        "what": "High blood pressure, or hypertension, means the force of blood against the artery walls is consistently too high. Over time it strains the heart and blood vessels and raises the risk of heart attack, stroke and kidney disease.",
        "symptoms": "High blood pressure usually causes no symptoms, which is why it is often called a silent condition. The only reliable way to know is to have blood pressure measured regularly.",
        "risk": "People at higher risk of high blood pressure include older adults, people with a family history of it, and those who are overweight, inactive, eat a lot of salt, drink heavily, smoke or have diabetes or kidney disease.",
        "treatment": "High blood pressure is treated with lifestyle changes such as eating less salt, staying active, limiting alcohol and keeping a healthy weight. Many people also need prescription medicines, such as diuretics, ACE inhibitors or calcium channel blockers.",
        "prevention": "The risk of high blood pressure can be lowered by eating a diet rich in vegetables, fruit and whole grains, cutting down on salt, exercising regularly, keeping a healthy weight, limiting alcohol and not smoking.",
    },
    "coronary artery disease": {
        "q": "coronary artery disease",
        "topic": "heart and circulation",
        "what": "Coronary artery disease is a narrowing of the arteries that supply the heart muscle, caused by a build-up of fatty plaque. It reduces blood flow to the heart and is the most common cause of heart attacks.",
        "symptoms": "Common symptoms of coronary artery disease include chest pain or pressure called angina, often brought on by exertion and eased by rest, shortness of breath and tiredness. Some people have no symptoms until a heart attack.",
        "risk": "People at higher risk of coronary artery disease include smokers and those with high blood pressure, high cholesterol, diabetes, obesity or a family history of early heart disease. Risk also rises with age.",
        "treatment": "Coronary artery disease is treated with lifestyle changes and medicines that lower cholesterol, control blood pressure and prevent clots. Some people need procedures such as a stent or bypass surgery to restore blood flow.",
    },
    "heart attack": {
        "q": "a heart attack",
        "topic": "heart and circulation",
        "what": "A heart attack happens when blood flow to part of the heart muscle is suddenly blocked, usually by a clot in a narrowed coronary artery. Without quick treatment the affected muscle can be permanently damaged.",
        "symptoms": "Common symptoms of a heart attack include chest pain, pressure or tightness that may spread to the arm, neck, jaw or back, shortness of breath, sweating, nausea and light-headedness. Women and older adults may have less typical symptoms.",
        "doctor": "A heart attack is always an emergency. If you think someone is having one, call emergency services immediately, help them rest, and start CPR if they become unresponsive and are not breathing normally.",
    },
    "heart failure": {
        "q": "heart failure",
        "topic": "heart and circulation",
        "what": "Heart failure is a long-term condition in which the heart does not pump blood as well as it should. It does not mean the heart has stopped, but the body may not get enough blood and fluid can build up.",
        "symptoms": "Common symptoms of heart failure include shortness of breath during activity or when lying flat, tiredness, swelling of the ankles and legs, and rapid weight gain from fluid build-up.",
        "treatment": "Heart failure is treated with medicines that ease the heart's workload and remove extra fluid, along with limiting salt, staying active as advised and monitoring weight daily. Some people benefit from devices or surgery.",
    },
    "atrial fibrillation": {
        "q": "atrial fibrillation",
        "topic": "heart and circulation",
        "what": "Atrial fibrillation is a common heart rhythm problem in which the upper chambers of the heart beat irregularly and often fast. It raises the risk of blood clots and stroke.",
        "symptoms": "Common symptoms of atrial fibrillation include a fluttering or pounding heartbeat, dizziness, shortness of breath, tiredness and chest discomfort. Some people notice no symptoms at all.",
        "treatment": "Atrial fibrillation is treated with medicines to control the heart rate or rhythm and, for many people, blood thinners to lower the risk of stroke. Procedures such as cardioversion or ablation may restore a normal rhythm.",
    },
    "stroke": {
        "q": "a stroke",
        "topic": "brain and nerves",
        "what": "A stroke happens when the blood supply to part of the brain is blocked or a blood vessel in the brain bursts. Brain cells begin to die within minutes, so a stroke is a medical emergency.",
        "symptoms": "Common signs of a stroke can be remembered with FAST: Face drooping, Arm weakness, Speech difficulty, and Time to call emergency services. Other signs include sudden numbness, confusion, trouble seeing, loss of balance or a severe headache.",
        "risk": "People at higher risk of a stroke include those with high blood pressure, atrial fibrillation, diabetes, high cholesterol or a previous stroke, as well as smokers and people who are overweight or inactive.",
        "treatment": "A stroke caused by a clot may be treated with clot-busting medicine or a procedure to remove the clot, both of which work best within hours. Bleeding strokes may need surgery, and rehabilitation helps people regain lost skills.",
    },
    "high cholesterol": {
        "q": "high cholesterol",
        "topic": "heart and circulation",
        "what": "High cholesterol means there is too much cholesterol, a waxy fat, in the blood. High levels of LDL cholesterol can build up in artery walls and raise the risk of heart disease and stroke.",
        "symptoms": "High cholesterol usually causes no symptoms. A simple blood test called a lipid panel is the only way to find out whether levels are high.",
        "treatment": "High cholesterol is treated with a diet low in saturated fat, regular exercise and weight control. Many people are also prescribed cholesterol-lowering medicines called statins.",
        "prevention": "The risk of high cholesterol can be lowered by eating more fibre, vegetables and unsaturated fats, limiting saturated and trans fats, staying active, keeping a healthy weight and not smoking.",
    },
    "deep vein thrombosis": {
        "q": "deep vein thrombosis",
        "topic": "heart and circulation",
        "what": "Deep vein thrombosis, or DVT, is a blood clot in a deep vein, usually in the leg. It is serious because part of the clot can break off and travel to the lungs, causing a pulmonary embolism.",
        "symptoms": "Common symptoms of deep vein thrombosis include swelling, pain or tenderness in one leg, often in the calf, along with warmth and red or darkened skin. Sudden breathlessness or chest pain may mean a clot has reached the lungs.",
        "risk": "People at higher risk of deep vein thrombosis include those who are immobile after surgery or illness, on long journeys, pregnant, taking hormone-based medicines, living with cancer, or who have had a clot before.",
        "prevention": "The risk of deep vein thrombosis can be lowered by moving around regularly, flexing the calves on long journeys, drinking enough fluids, and following medical advice about blood thinners or compression stockings after surgery.",
    },
    "type 2 diabetes": {
        "q": "type 2 diabetes",
        "topic": "hormones and metabolism",
        "what": "Type 2 diabetes is a long-term condition in which the body does not use insulin properly, so blood sugar levels stay too high. Over time high blood sugar can damage the heart, kidneys, eyes and nerves.",
        "symptoms": "Common symptoms of type 2 diabetes include increased thirst, passing urine often, tiredness, blurred vision, slow-healing cuts and frequent infections. Many people have no symptoms for years.",
        "risk": "People at higher risk of type 2 diabetes include those who are overweight, physically inactive, over 45, or have a family history of diabetes, prediabetes or a history of diabetes during pregnancy.",
        "diagnosis": "Type 2 diabetes is diagnosed with blood tests such as a fasting blood glucose, an HbA1c test that reflects average blood sugar over about three months, or an oral glucose tolerance test.",
        "treatment": "Type 2 diabetes is managed with healthy eating, regular physical activity and weight loss when needed. Many people also take medicines such as metformin, and some eventually need insulin.",
        "prevention": "The risk of type 2 diabetes can often be lowered or delayed by losing a modest amount of weight, being active for at least 150 minutes a week, and eating a diet rich in vegetables, whole grains and fibre.",
    },
    "type 1 diabetes": {
        "q": "type 1 diabetes",
        "topic": "hormones and metabolism",
        "what": "Type 1 diabetes is an autoimmune condition in which the immune system destroys the insulin-making cells of the pancreas. People with it need insulin every day, and it often starts in childhood or young adulthood.",
        "symptoms": "Common symptoms of type 1 diabetes include extreme thirst, frequent urination, weight loss without trying, tiredness and blurred vision. These can develop quickly over a few weeks.",
        "treatment": "Type 1 diabetes is treated with insulin given by injections or an insulin pump, together with regular blood sugar monitoring, carbohydrate awareness and physical activity. Education helps people adjust insulin safely.",
    },
    "hypothyroidism": {
        "q": "an underactive thyroid",
        "topic": "hormones and metabolism",
        "what": "An underactive thyroid, or hypothyroidism, means the thyroid gland in the neck does not make enough thyroid hormone. This slows down many body processes and is more common in women and older adults.",
        "symptoms": "Common symptoms of an underactive thyroid include tiredness, weight gain, feeling cold, dry skin, thinning hair, constipation, low mood and slowed thinking. Symptoms often develop slowly over months or years.",
        "diagnosis": "An underactive thyroid is diagnosed with blood tests that measure thyroid-stimulating hormone, or TSH, and thyroxine, or T4. A high TSH with a low T4 usually means the thyroid is underactive.",
        "treatment": "An underactive thyroid is usually treated with a daily tablet of levothyroxine, which replaces the missing hormone. Regular blood tests help the doctor adjust the dose.",
    },
    "hyperthyroidism": {
        "q": "an overactive thyroid",
        "topic": "hormones and metabolism",
        "what": "An overactive thyroid, or hyperthyroidism, means the thyroid gland makes too much thyroid hormone, which speeds up the body's processes. Graves' disease is the most common cause.",
        "symptoms": "Common symptoms of an overactive thyroid include weight loss, a fast or irregular heartbeat, nervousness, shaking hands, sweating, feeling hot, trouble sleeping and more frequent bowel movements.",
        "treatment": "An overactive thyroid is treated with medicines that reduce hormone production, radioactive iodine to shrink the gland, or surgery. Beta-blockers may be used for a short time to ease a racing heart and shakiness.",
    },
    "obesity": {
        "q": "obesity",
        "topic": "hormones and metabolism",
        "what": "Obesity is a condition of excess body fat that can harm health. In adults it is usually defined as a body mass index of 30 or higher, though waist size and other factors also matter.",
        "complications": "Obesity raises the risk of type 2 diabetes, high blood pressure, heart disease, stroke, sleep apnoea, osteoarthritis and some cancers. Losing even 5 to 10 percent of body weight can improve many of these risks.",
        "treatment": "Obesity is treated with a combination of a healthier diet, more physical activity and behaviour support. For some people, doctors may add weight-loss medicines or recommend bariatric surgery.",
    },
    "GERD": {
        "q": "acid reflux",
        "topic": "digestion",
        "what": "Acid reflux happens when stomach acid flows back up into the oesophagus, the tube connecting the mouth and stomach. When it happens often it is called gastroesophageal reflux disease, or GERD.",
        "symptoms": "Common symptoms of acid reflux include heartburn, a burning feeling in the chest after eating or when lying down, a sour taste in the mouth, bringing food back up, and sometimes a cough or hoarse voice.",
        "treatment": "Acid reflux is treated with lifestyle changes such as smaller meals, not eating late, raising the head of the bed and avoiding trigger foods. Antacids, H2 blockers or proton pump inhibitors can reduce stomach acid.",
        "doctor": "For acid reflux, see a doctor if heartburn happens more than twice a week, medicines do not help, or there is difficulty swallowing, weight loss, vomiting or black stools. Chest pain should be checked urgently to rule out a heart problem.",
    },
    "constipation": {
        "q": "constipation",
        "topic": "digestion",
        "what": "Constipation means having fewer than three bowel movements a week, or stools that are hard, dry and difficult to pass. It is very common and usually short-lived.",
        "causes": "Constipation is often caused by not eating enough fibre, not drinking enough fluids, lack of activity or ignoring the urge to go. Some medicines, such as opioid painkillers and iron tablets, pregnancy and certain conditions can also cause it.",
        "treatment": "Constipation usually improves by eating more fibre from fruit, vegetables and whole grains, drinking more water and staying active. Over-the-counter laxatives can help for a short time.",
    },
    "gastroenteritis": {
        "q": "stomach flu",
        "topic": "digestion",
        "what": "Stomach flu, or gastroenteritis, is an infection of the stomach and intestines, usually caused by viruses such as norovirus. Despite its name, it is not caused by the influenza virus.",
        "symptoms": "Common symptoms of stomach flu include watery diarrhoea, nausea, vomiting, stomach cramps, headache and sometimes a mild fever. Symptoms usually start suddenly and last one to three days.",
        "treatment": "Stomach flu is treated mainly by preventing dehydration with small, frequent sips of water or oral rehydration solution. Most people recover on their own, and eating can resume as soon as it is tolerated.",
        "doctor": "For stomach flu, seek medical help if there are signs of dehydration such as little or no urine, dizziness or a dry mouth, blood in the stool, a high fever, or vomiting that prevents keeping any fluids down.",
    },
    "irritable bowel syndrome": {
        "q": "irritable bowel syndrome",
        "topic": "digestion",
        "what": "Irritable bowel syndrome, or IBS, is a common long-term condition of the digestive system. It causes recurring tummy pain and changes in bowel habits without visible damage to the gut.",
        "symptoms": "Common symptoms of irritable bowel syndrome include stomach pain or cramps often eased by a bowel movement, bloating, wind, and diarrhoea, constipation or both. Symptoms tend to come and go.",
        "treatment": "Irritable bowel syndrome is managed by identifying trigger foods, adjusting fibre, eating regular meals, managing stress and exercising. Medicines for cramps, diarrhoea or constipation can help during flares.",
    },
    "appendicitis": {
        "q": "appendicitis",
        "topic": "digestion",
        "what": "Appendicitis is inflammation of the appendix, a small pouch attached to the large intestine. It is a medical emergency because an inflamed appendix can burst and cause a serious infection.",
        "symptoms": "Common symptoms of appendicitis include pain that starts around the belly button and moves to the lower right side of the abdomen, loss of appetite, nausea, vomiting and fever. The pain usually gets steadily worse.",
        "treatment": "Appendicitis is usually treated with surgery to remove the appendix, often through small keyhole cuts. Antibiotics are also given, and in some mild cases antibiotics alone may be used.",
    },
    "gallstones": {
        "q": "gallstones",
        "plural": "yes",
        "topic": "digestion",
        "what": "Gallstones are hard deposits that form in the gallbladder, a small organ under the liver that stores bile. Many gallstones cause no problems, but some block the flow of bile and cause pain.",
        "symptoms": "Common symptoms of gallstones include sudden, intense pain in the upper right or middle of the abdomen, often after a fatty meal, which may spread to the right shoulder. Fever, yellow skin or dark urine need urgent care.",
        "treatment": "Gallstones that cause repeated pain are usually treated by removing the gallbladder with keyhole surgery. People can live normally without a gallbladder, and stones that cause no symptoms often need no treatment.",
    },
    "celiac disease": {
        "q": "celiac disease",
        "topic": "digestion",
        "what": "Celiac disease is an autoimmune condition in which eating gluten, a protein in wheat, barley and rye, damages the lining of the small intestine. This can stop the body from absorbing nutrients well.",
        "symptoms": "Common symptoms of celiac disease include diarrhoea, bloating, stomach pain, tiredness, weight loss and anaemia. Some people have few gut symptoms but show signs such as an itchy rash or poor growth in children.",
        "treatment": "Celiac disease is treated with a strict, lifelong gluten-free diet, which allows the gut to heal. A dietitian can help people find hidden sources of gluten and keep a balanced diet.",
    },
    "peptic ulcer": {
        "q": "a stomach ulcer",
        "topic": "digestion",
        "what": "A stomach ulcer, or peptic ulcer, is an open sore in the lining of the stomach or the first part of the small intestine. Most are caused by Helicobacter pylori bacteria or by regular use of anti-inflammatory painkillers.",
        "symptoms": "Common symptoms of a stomach ulcer include a burning or gnawing pain in the upper abdomen, bloating, indigestion and nausea. Vomiting blood or passing black, tarry stools is a sign of bleeding and needs urgent care.",
        "treatment": "A stomach ulcer is treated with medicines that reduce stomach acid, such as proton pump inhibitors, and with antibiotics if Helicobacter pylori is found. Stopping anti-inflammatory painkillers, if possible, helps it heal.",
    },
    "urinary tract infection": {
        "q": "a urinary tract infection",
        "topic": "kidneys and bladder",
        "what": "A urinary tract infection, or UTI, is an infection anywhere in the urinary system, most often the bladder. It is usually caused by bacteria from the bowel and is much more common in women than men.",
        "symptoms": "Common symptoms of a urinary tract infection include a burning feeling when passing urine, needing to urinate often or urgently, cloudy or strong-smelling urine, and lower tummy pain. Fever and back pain may mean the kidneys are involved.",
        "treatment": "A urinary tract infection is usually treated with a short course of antibiotics prescribed by a doctor. Drinking plenty of fluids and using pain relief can ease discomfort while the medicine works.",
        "prevention": "The risk of a urinary tract infection can be lowered by drinking enough fluids, urinating after sex, wiping from front to back, and not holding urine for long periods.",
    },
    "kidney stones": {
        "q": "kidney stones",
        "plural": "yes",
        "topic": "kidneys and bladder",
        "what": "Kidney stones are hard deposits of minerals and salts that form inside the kidneys. Small stones may pass on their own in the urine, while larger ones can block the urinary tract and cause severe pain.",
        "symptoms": "Common symptoms of kidney stones include severe pain in the side and back below the ribs that may spread to the lower abdomen or groin, pain that comes in waves, blood in the urine, nausea and vomiting.",
        "treatment": "Kidney stones are often treated with pain relief and plenty of fluids while the stone passes. Larger stones may be broken up with sound waves or removed with a thin scope passed through the urinary tract.",
        "prevention": "The risk of kidney stones can be lowered by drinking enough water to keep urine pale, eating less salt and animal protein, and following any diet advice based on the type of stone a person has had.",
    },
    "chronic kidney disease": {
        "q": "chronic kidney disease",
        "topic": "kidneys and bladder",
        "what": "Chronic kidney disease is a long-term condition in which the kidneys gradually lose their ability to filter waste and fluid from the blood. It is most often caused by diabetes and high blood pressure.",
        "diagnosis": "Chronic kidney disease is diagnosed with a blood test that estimates kidney function, called eGFR, and a urine test that looks for protein. Early stages often cause no symptoms, so testing matters for people at risk.",
        "treatment": "Chronic kidney disease is managed by controlling blood pressure and blood sugar, adjusting medicines, and following diet advice. Advanced kidney failure may need dialysis or a kidney transplant.",
    },
    "osteoarthritis": {
        "q": "osteoarthritis",
        "topic": "bones and joints",
        "what": "Osteoarthritis is the most common form of arthritis, in which the cartilage that cushions the ends of bones gradually wears down. It most often affects the knees, hips, hands and spine.",
        "symptoms": "Common symptoms of osteoarthritis include joint pain that worsens with use, stiffness after rest or in the morning that usually eases within half an hour, swelling, and a grating feeling when the joint moves.",
        "risk": "People at higher risk of osteoarthritis include older adults, women, people who are overweight, and those with previous joint injuries or jobs and sports that put repeated stress on a joint.",
        "treatment": "Osteoarthritis is managed with exercise to strengthen muscles, weight loss when needed, pain relievers and physical therapy. Severe cases may be treated with joint injections or joint replacement surgery.",
    },
    "rheumatoid arthritis": {
        "q": "rheumatoid arthritis",
        "topic": "bones and joints",
        "what": "Rheumatoid arthritis is an autoimmune disease in which the immune system attacks the lining of the joints, causing inflammation. It often affects the small joints of the hands and feet on both sides of the body.",
        "symptoms": "Common symptoms of rheumatoid arthritis include painful, swollen and warm joints, morning stiffness lasting more than an hour, tiredness and sometimes a low fever. Without treatment, joints can become damaged.",
        "treatment": "Rheumatoid arthritis is treated with disease-modifying medicines such as methotrexate and sometimes biologic drugs, which calm the immune system and protect the joints. Early treatment gives the best results.",
    },
    "gout": {
        "q": "gout",
        "ask_prevention": "How can gout attacks be prevented?",
        "topic": "bones and joints",
        "what": "Gout is a type of arthritis caused by a build-up of uric acid crystals in a joint. It causes sudden attacks of severe pain, often in the big toe.",
        "symptoms": "Common symptoms of gout include sudden, intense joint pain, often starting at night, with swelling, redness and warmth. The big toe is affected most often, but ankles, knees and other joints can be too.",
        "causes": "Gout is caused by high levels of uric acid in the blood. Risk factors include being male, obesity, drinking alcohol, especially beer, eating a lot of red meat or seafood, sugary drinks, kidney disease and some water tablets.",
        "treatment": "Gout attacks are treated with anti-inflammatory medicines, colchicine or steroids to relieve pain and swelling. People with frequent attacks may take a long-term medicine such as allopurinol to lower uric acid.",
    },
    "osteoporosis": {
        "q": "osteoporosis",
        "topic": "bones and joints",
        "what": "Osteoporosis is a condition in which bones become thin, weak and more likely to break. It often causes no symptoms until a fracture happens, most commonly in the hip, spine or wrist.",
        "risk": "People at higher risk of osteoporosis include women after menopause, older adults, people with a family history of it, smokers, heavy drinkers, those with low body weight, and people taking long-term steroid medicines.",
        "diagnosis": "Osteoporosis is diagnosed with a bone density scan, called a DXA scan, which uses low-dose X-rays to measure how dense the bones are, usually at the hip and spine.",
        "prevention": "The risk of osteoporosis can be lowered by getting enough calcium and vitamin D, doing regular weight-bearing and muscle-strengthening exercise, not smoking and limiting alcohol.",
    },
    "low back pain": {
        "q": "low back pain",
        "topic": "bones and joints",
        "what": "Low back pain is pain in the lower part of the spine and is one of the most common reasons people see a doctor. Most cases come from strained muscles or ligaments and improve within a few weeks.",
        "treatment": "Low back pain usually improves by staying gently active rather than resting in bed, using heat and simple pain relievers, and doing stretching or strengthening exercises. Physical therapy can help if pain lasts.",
        "doctor": "For low back pain, seek urgent care if there is numbness around the groin or buttocks, loss of bladder or bowel control, weakness in the legs, fever, or pain after a serious fall or injury.",
    },
    "carpal tunnel syndrome": {
        "q": "carpal tunnel syndrome",
        "topic": "bones and joints",
        "what": "Carpal tunnel syndrome is a condition in which the median nerve is squeezed as it passes through a narrow channel in the wrist. It causes tingling, numbness and weakness in the hand.",
        "symptoms": "Common symptoms of carpal tunnel syndrome include numbness, tingling or pain in the thumb, index and middle fingers, often worse at night, and a weak grip that makes it easy to drop things.",
        "treatment": "Carpal tunnel syndrome is often treated with a wrist splint worn at night, rest from repetitive hand movements and sometimes a steroid injection. Surgery to release the nerve may be needed if symptoms persist.",
    },
    "migraine": {
        "q": "migraine",
        "topic": "brain and nerves",
        "what": "Migraine is a common neurological condition that causes repeated attacks of moderate to severe headache. Attacks often last from several hours to three days and can interfere with daily life.",
        "symptoms": "Common symptoms of migraine include a throbbing headache, often on one side, nausea or vomiting, and sensitivity to light and sound. Some people have an aura beforehand, such as flashing lights or zigzag lines in their vision.",
        "causes": "Migraine is thought to involve changes in brain activity and blood vessels, and it often runs in families. Common triggers include stress, lack of sleep, skipped meals, hormonal changes, certain foods, alcohol and bright lights.",
        "treatment": "Migraine attacks are treated with pain relievers or migraine-specific medicines called triptans, taken early, and with rest in a dark, quiet room. People with frequent attacks may take daily preventive medicine.",
    },
    "tension headache": {
        "q": "a tension headache",
        "topic": "brain and nerves",
        "what": "A tension headache is the most common type of headache. It causes a dull, steady ache or a feeling of pressure, like a tight band around the head, and is often linked to stress, tiredness or poor posture.",
        "treatment": "A tension headache usually responds to simple pain relievers, rest, fluids, and relaxing tight neck and shoulder muscles. Regular sleep, exercise and stress management can reduce how often they happen.",
        "doctor": "For a headache, seek urgent care if it is sudden and severe, follows a head injury, or comes with fever and a stiff neck, confusion, weakness, trouble speaking or changes in vision.",
    },
    "epilepsy": {
        "q": "epilepsy",
        "ask_doctor": "When is a seizure an emergency?",
        "topic": "brain and nerves",
        "what": "Epilepsy is a condition of the brain that causes repeated seizures, which are sudden bursts of electrical activity in the brain. Seizures can range from brief blank spells to shaking of the whole body.",
        "treatment": "Epilepsy is usually treated with anti-seizure medicines, which control seizures for most people. When medicines do not work, options include special diets, nerve stimulation devices or brain surgery.",
        "doctor": "During a seizure, call emergency services if it lasts more than five minutes, a second seizure follows, the person is injured, pregnant or has trouble breathing, or it is their first seizure.",
    },
    "Alzheimer's disease": {
        "q": "Alzheimer's disease",
        "topic": "brain and nerves",
        "what": "Alzheimer's disease is a progressive brain disease and the most common cause of dementia. It slowly damages memory, thinking and the ability to carry out everyday tasks.",
        "symptoms": "Common early symptoms of Alzheimer's disease include forgetting recent events or conversations, repeating questions, misplacing things, getting lost in familiar places and difficulty planning. Later, mood and behaviour may change.",
        "treatment": "Alzheimer's disease has no cure, but some medicines can ease memory symptoms for a time. Support with routines, a safe home, physical and social activity, and help for carers improve quality of life.",
    },
    "concussion": {
        "q": "a concussion",
        "topic": "brain and nerves",
        "what": "A concussion is a mild traumatic brain injury caused by a blow to the head or a jolt that shakes the brain. It temporarily affects how the brain works, even though it usually does not show on scans.",
        "symptoms": "Common symptoms of a concussion include headache, dizziness, nausea, confusion, memory problems, sensitivity to light and noise, and feeling foggy. Loss of consciousness happens in only some cases.",
        "treatment": "A concussion is treated with relative rest for a day or two, followed by a gradual return to normal activities and sports as symptoms allow. Repeated vomiting, worsening headache or drowsiness needs urgent care.",
    },
    "depression": {
        "q": "depression",
        "topic": "mental health",
        "what": "Depression is a common mental health condition that causes a persistently low mood or loss of interest in activities for at least two weeks. It affects how a person feels, thinks and manages daily life.",
        "symptoms": "Common symptoms of depression include feeling sad or empty, losing interest in things once enjoyed, changes in sleep and appetite, tiredness, poor concentration, feelings of worthlessness and sometimes thoughts of death or suicide.",
        "treatment": "Depression is treated with talking therapies such as cognitive behavioural therapy, antidepressant medicines, or both. Regular exercise, sleep and social support also help, and most people improve with treatment.",
        "doctor": "For depression, see a doctor if low mood lasts more than two weeks or makes daily life hard. Anyone with thoughts of harming themselves should seek help right away from emergency services or a crisis line.",
    },
    "anxiety disorder": {
        "q": "generalized anxiety disorder",
        "topic": "mental health",
        "what": "Generalized anxiety disorder is a mental health condition in which a person feels excessive, hard-to-control worry about many everyday things for months at a time. It is more than ordinary stress.",
        "symptoms": "Common symptoms of generalized anxiety disorder include constant worry that is hard to control, restlessness, feeling on edge, tiredness, trouble concentrating, irritability, muscle tension and difficulty sleeping. Some people also have a racing heart or an upset stomach.",
        "treatment": "Generalized anxiety disorder is treated with talking therapies such as cognitive behavioural therapy, certain medicines including some antidepressants, or both. Exercise, good sleep and relaxation techniques also help.",
    },
    "insomnia": {
        "q": "insomnia",
        "topic": "mental health",
        "what": "Insomnia is a common sleep problem in which a person has trouble falling asleep, staying asleep or waking too early, and feels unrefreshed during the day. It can be short-term or long-lasting.",
        "causes": "Insomnia is often caused by stress, worry, irregular sleep schedules, caffeine, alcohol, late screen use, pain, or other health conditions such as depression, anxiety and sleep apnoea.",
        "treatment": "Insomnia is best treated by improving sleep habits and with cognitive behavioural therapy for insomnia, which has lasting benefits. Sleeping tablets are usually only recommended for short periods.",
        "prevention": "The risk of insomnia can be lowered by keeping a regular sleep and wake time, avoiding caffeine late in the day, limiting screens before bed, and keeping the bedroom dark, quiet and cool.",
    },
    "eczema": {
        "q": "eczema",
        "topic": "skin",
        "what": "Eczema, or atopic dermatitis, is a long-term skin condition that causes dry, itchy and inflamed skin. It is common in children and often occurs in people with asthma or hay fever.",
        "symptoms": "Common symptoms of eczema include dry, itchy, red or darker patches of skin, often in the creases of the elbows and knees, on the hands or on the face. Scratching can make the skin thick, cracked or weeping.",
        "treatment": "Eczema is treated by using moisturising creams every day, avoiding triggers such as harsh soaps, and applying steroid creams during flares. A doctor may prescribe other treatments if these do not help.",
    },
    "psoriasis": {
        "q": "psoriasis",
        "topic": "skin",
        "what": "Psoriasis is a long-term immune condition that makes skin cells build up too quickly, forming thick, scaly patches. It is not contagious and often comes and goes in flares.",
        "symptoms": "Common symptoms of psoriasis include raised, red or darker patches covered with silvery scales, usually on the elbows, knees, scalp and lower back, along with itching and sometimes pitted nails or joint pain.",
        "treatment": "Psoriasis is treated with creams and ointments, light therapy, and for more severe disease, tablets or injected medicines that calm the immune system. Moisturising and avoiding triggers can reduce flares.",
    },
    "acne": {
        "q": "acne",
        "topic": "skin",
        "what": "Acne is a common skin condition in which hair follicles become blocked with oil and dead skin cells, causing spots. It mostly affects the face, chest and back and is very common in teenagers.",
        "treatment": "Acne is treated with creams or gels containing benzoyl peroxide, retinoids or antibiotics, and sometimes with tablets. Treatment usually takes several weeks to work, and squeezing spots can cause scarring.",
    },
    "shingles": {
        "q": "shingles",
        "topic": "skin",
        "what": "Shingles is a painful rash caused by the reactivation of the chickenpox virus, which stays dormant in nerves after chickenpox. It usually appears as a band of blisters on one side of the body.",
        "symptoms": "Common symptoms of shingles include burning, tingling or pain on one side of the body, followed a few days later by a rash of fluid-filled blisters. Some people develop long-lasting nerve pain afterwards.",
        "prevention": "The risk of shingles and its complications can be lowered with the shingles vaccine, which is recommended for older adults and some people with weakened immune systems.",
    },
    "athlete's foot": {
        "q": "athlete's foot",
        "topic": "skin",
        "what": "Athlete's foot is a common fungal infection of the skin on the feet, especially between the toes. It spreads in warm, damp places such as changing rooms and shared showers.",
        "treatment": "Athlete's foot is usually treated with antifungal creams, sprays or powders from a pharmacy, used for as long as the instructions say. Keeping the feet clean and dry helps it clear up.",
    },
    "skin cancer": {
        "q": "skin cancer",
        "topic": "skin",
        "what": "Skin cancer is the uncontrolled growth of abnormal skin cells, usually caused by damage from ultraviolet light. The main types are basal cell carcinoma, squamous cell carcinoma and melanoma, the most dangerous.",
        "symptoms": "Common warning signs of skin cancer include a new growth or a sore that does not heal, and a mole that changes in size, shape or colour. The ABCDE guide checks moles for Asymmetry, irregular Border, uneven Colour, large Diameter and Evolving changes.",
        "prevention": "The risk of skin cancer can be lowered by seeking shade, wearing protective clothing and a hat, using a broad-spectrum sunscreen of SPF 30 or higher, avoiding sunburn and never using tanning beds.",
    },
    "conjunctivitis": {
        "q": "pink eye",
        "topic": "eyes and ears",
        "what": "Pink eye, or conjunctivitis, is inflammation of the thin clear layer covering the white of the eye and the inside of the eyelids. It can be caused by viruses, bacteria or allergies.",
        "symptoms": "Common symptoms of pink eye include redness in one or both eyes, itching or grittiness, watering, and a discharge that may crust the eyelids shut in the morning.",
        "treatment": "Pink eye often clears by itself within one to two weeks. Cleaning the eyelids and using cool compresses help, bacterial cases may be treated with antibiotic drops, and allergic cases with antihistamine drops.",
    },
    "ear infection": {
        "q": "a middle ear infection",
        "topic": "eyes and ears",
        "what": "A middle ear infection, or otitis media, is an infection of the space behind the eardrum. It is very common in young children and often follows a cold.",
        "symptoms": "Common symptoms of a middle ear infection include ear pain, fever, trouble hearing, and in young children tugging at the ear, irritability and poor sleep. Sometimes fluid drains from the ear.",
        "treatment": "A middle ear infection often gets better on its own within a few days, so doctors may first recommend pain relief and watchful waiting. Antibiotics may be given to young babies or when symptoms are severe or do not improve.",
    },
    "glaucoma": {
        "q": "glaucoma",
        "topic": "eyes and ears",
        "what": "Glaucoma is a group of eye diseases that damage the optic nerve, usually because of raised pressure inside the eye. It can slowly reduce side vision and lead to blindness if untreated.",
        "symptoms": "Glaucoma usually causes no symptoms in its early stages, and side vision is lost so gradually that people may not notice. A rare sudden type causes severe eye pain, blurred vision, redness and vomiting and needs urgent care.",
        "treatment": "Glaucoma is treated with eye drops that lower eye pressure, and sometimes with laser treatment or surgery. Treatment cannot restore lost vision, so regular eye tests for early detection are important.",
    },
    "cataracts": {
        "q": "cataracts",
        "plural": "yes",
        "topic": "eyes and ears",
        "what": "Cataracts are a clouding of the normally clear lens inside the eye. They develop slowly, mainly with age, and cause vision to become blurry or dim.",
        "symptoms": "Common symptoms of cataracts include cloudy or blurred vision, faded colours, glare or halos around lights, poor night vision and frequent changes in glasses prescription.",
        "treatment": "Cataracts are treated with a common and safe operation that removes the cloudy lens and replaces it with a clear artificial lens. Until then, stronger glasses and brighter lighting may help.",
    },
    "iron deficiency anemia": {
        "q": "iron deficiency anemia",
        "topic": "blood",
        "what": "Iron deficiency anemia is a condition in which the body lacks enough iron to make healthy red blood cells. As a result, less oxygen reaches the body's tissues.",
        "symptoms": "Common symptoms of iron deficiency anemia include tiredness, weakness, pale skin, shortness of breath, dizziness, cold hands and feet, brittle nails and unusual cravings for ice or non-food items.",
        "causes": "Iron deficiency anemia is caused by blood loss, such as heavy periods or bleeding in the gut, not getting enough iron in the diet, poor absorption of iron, or higher needs during pregnancy.",
        "treatment": "Iron deficiency anemia is treated with iron supplements and iron-rich foods such as red meat, beans, lentils and dark leafy greens. Finding and treating the cause of any blood loss is equally important.",
    },
    "Lyme disease": {
        "q": "Lyme disease",
        "topic": "infections",
        "what": "Lyme disease is a bacterial infection spread to people by the bite of infected ticks. Found mainly in wooded and grassy areas, it is usually cured with antibiotics when treated early.",
        "symptoms": "Common early symptoms of Lyme disease include a spreading red rash, often shaped like a bull's-eye, around the tick bite, along with fever, headache, tiredness and aching muscles and joints.",
        "prevention": "The risk of Lyme disease can be lowered by using insect repellent, wearing long sleeves and trousers in tick areas, checking the body for ticks after being outdoors, and removing any tick promptly with fine tweezers.",
    },
    "chickenpox": {
        "q": "chickenpox",
        "topic": "infections",
        "what": "Chickenpox is a highly contagious infection caused by the varicella-zoster virus. It is usually mild in children but can be more serious in adults, pregnant women and people with weak immune systems.",
        "symptoms": "Common symptoms of chickenpox include an itchy rash of spots that turn into fluid-filled blisters and then crust over, along with fever, tiredness and loss of appetite.",
        "prevention": "Chickenpox is prevented with the varicella vaccine, given in two doses in childhood in many countries. The vaccine greatly reduces the chance of catching chickenpox and of severe illness.",
    },
    "measles": {
        "q": "measles",
        "topic": "infections",
        "what": "Measles is a highly contagious viral illness that spreads through the air. It can cause serious complications such as pneumonia and brain swelling, especially in young children.",
        "symptoms": "Common symptoms of measles include high fever, cough, runny nose and red, watery eyes, followed a few days later by a red-brown rash that starts on the face and spreads down the body.",
        "prevention": "Measles is prevented with the measles, mumps and rubella vaccine, known as MMR. Two doses, usually given in childhood, are highly effective and provide long-lasting protection for most people.",
    },
    "dehydration": {
        "q": "dehydration",
        "topic": "general health",
        "what": "Dehydration happens when the body loses more fluid than it takes in. It can be caused by heat, exercise, fever, vomiting or diarrhoea, and babies and older adults are most at risk.",
        "symptoms": "Common symptoms of dehydration include thirst, dark yellow and strong-smelling urine, passing little urine, a dry mouth, tiredness, dizziness and headache. Severe dehydration can cause confusion and needs urgent care.",
        "treatment": "Dehydration is treated by drinking fluids such as water or oral rehydration solution in small, frequent sips. Severe dehydration may need fluids given through a drip in hospital.",
    },
    "heat stroke": {
        "q": "heat stroke",
        "ask_treatment": "What should be done for someone with heat stroke?",
        "topic": "first aid",
        "what": "Heat stroke is a life-threatening condition in which the body overheats and can no longer cool itself, with a core temperature usually above 40 degrees Celsius. It needs emergency treatment.",
        "symptoms": "Common signs of heat stroke include a very high body temperature, hot skin that may be dry or sweaty, confusion, slurred speech, a fast pulse, headache, and sometimes seizures or loss of consciousness.",
        "treatment": "Heat stroke is treated by calling emergency services and cooling the person quickly: move them to a cool place, remove extra clothing, and apply cool water, wet cloths or ice packs to the neck, armpits and groin.",
    },
    "sleep apnea": {
        "q": "sleep apnea",
        "topic": "general health",
        "what": "Sleep apnea is a condition in which breathing repeatedly stops and starts during sleep, most often because the throat relaxes and blocks the airway. It disrupts sleep and strains the heart.",
        "symptoms": "Common symptoms of sleep apnea include loud snoring, pauses in breathing noticed by a partner, gasping or choking at night, waking with a headache or dry mouth, and feeling very sleepy during the day.",
        "treatment": "Sleep apnea is commonly treated with a CPAP machine, which keeps the airway open with gentle air pressure through a mask. Losing weight, avoiding alcohol before bed and sleeping on one's side can also help.",
    },
}

GENERAL: list[tuple[str, str, str]] = [
    # first aid
    (
        "What should I do if someone is choking?",
        "If someone is choking and cannot cough, speak or breathe, call emergency services and give up to five firm back blows between the shoulder blades, then up to five abdominal thrusts. Keep alternating until the object comes out or help arrives.",
        "first aid",
    ),
    (
        "How do I treat a minor burn?",
        "A minor burn should be cooled under cool running water for about 20 minutes, then covered loosely with cling film or a clean non-fluffy dressing. Do not use ice, butter or creams, and seek care for large, deep or facial burns.",
        "first aid",
    ),
    (
        "How do you stop a nosebleed?",
        "A nosebleed can usually be stopped by sitting up, leaning forward and pinching the soft part of the nose firmly for 10 to 15 minutes while breathing through the mouth. Seek help if bleeding lasts longer than 20 minutes or follows a head injury.",
        "first aid",
    ),
    (
        "What is CPR?",
        "CPR, or cardiopulmonary resuscitation, is an emergency technique of chest compressions, sometimes with rescue breaths, used when someone's heart has stopped. It keeps blood flowing to the brain until a defibrillator or paramedics arrive.",
        "first aid",
    ),
    (
        "How do I help someone who has fainted?",
        "A person who has fainted should be laid on their back with their legs raised, if possible, to help blood flow to the brain. Loosen tight clothing, and call emergency services if they do not wake within a minute or are injured.",
        "first aid",
    ),
    (
        "What should I do for a sprained ankle?",
        "A sprained ankle is usually treated at first with rest, ice wrapped in a cloth for up to 20 minutes at a time, gentle compression and raising the leg. See a doctor if you cannot bear weight or the pain and swelling are severe.",
        "first aid",
    ),
    (
        "How should a bleeding cut be treated?",
        "A bleeding cut should be treated by pressing firmly on it with a clean cloth or dressing until the bleeding stops, then cleaning it with water and covering it. Deep, gaping or dirty wounds, or bleeding that will not stop, need medical care.",
        "first aid",
    ),
    (
        "What are the signs of a severe allergic reaction?",
        "The signs of a severe allergic reaction, called anaphylaxis, include swelling of the lips or throat, difficulty breathing, wheezing, a rash, dizziness and collapse. It is an emergency: use an adrenaline auto-injector if one is available and call emergency services.",
        "first aid",
    ),
    (
        "What should I do if someone has a seizure?",
        "If someone has a seizure, keep them safe by moving hard objects away and cushioning their head, and do not hold them down or put anything in their mouth. Once the shaking stops, roll them onto their side and stay with them.",
        "first aid",
    ),
    (
        "How do you know if a bone is broken?",
        "A broken bone often causes severe pain, swelling, bruising, trouble moving the area and sometimes a visible deformity or a grinding feeling. Keep the limb still and seek medical care, where an X-ray can confirm the break.",
        "first aid",
    ),
    (
        "What is the recovery position?",
        "The recovery position is a way of lying an unconscious person who is breathing on their side, with the head tilted back, so the airway stays open and vomit can drain. Stay with them and check their breathing until help arrives.",
        "first aid",
    ),
    (
        "What should I do after a bee sting?",
        "After a bee sting, scrape out the stinger with a fingernail or card, wash the area, and use a cold pack to reduce swelling. Get emergency help if there are signs of a severe allergic reaction such as trouble breathing or facial swelling.",
        "first aid",
    ),
    (
        "What should I do if someone may have been poisoned?",
        "If someone may have been poisoned, call emergency services or a poison control centre straight away and follow their advice. Do not try to make the person vomit, and keep the container to show what was taken.",
        "first aid",
    ),
    (
        "How do I treat a mild sunburn?",
        "A mild sunburn can be soothed by cooling the skin with a cool shower or damp cloth, applying aloe vera or a moisturiser, drinking plenty of water and staying out of the sun. Blistering over a large area or fever needs medical advice.",
        "first aid",
    ),
    # nutrition
    (
        "What is a balanced diet?",
        "A balanced diet includes plenty of vegetables and fruit, whole grains, protein foods such as beans, fish, eggs or lean meat, and some dairy or calcium-rich alternatives. It limits added sugar, salt and saturated fat.",
        "nutrition",
    ),
    (
        "Why is fibre important?",
        "Fibre is important because it keeps bowel movements regular, helps control blood sugar and cholesterol, and helps people feel full. Good sources include whole grains, beans, lentils, vegetables, fruit, nuts and seeds.",
        "nutrition",
    ),
    (
        "How much water should I drink each day?",
        "The amount of water needed each day varies with body size, activity and climate, but many adults need about 6 to 8 cups of fluid a day. Pale yellow urine is a simple sign of drinking enough.",
        "nutrition",
    ),
    (
        "What does vitamin D do in the body?",
        "Vitamin D helps the body absorb calcium, which keeps bones and teeth strong, and it supports muscles and the immune system. The skin makes it in sunlight, and it is also found in oily fish, eggs and fortified foods.",
        "nutrition",
    ),
    (
        "Why does the body need iron?",
        "Iron is needed to make haemoglobin, the protein in red blood cells that carries oxygen around the body. Good sources include red meat, poultry, fish, beans, lentils, tofu, fortified cereals and dark leafy greens.",
        "nutrition",
    ),
    (
        "What is calcium needed for?",
        "Calcium is needed to build and maintain strong bones and teeth, and it helps muscles, nerves and the heart work properly. Dairy foods, fortified plant milks, tofu, canned fish with bones and leafy greens are good sources.",
        "nutrition",
    ),
    (
        "Why should I limit salt?",
        "Limiting salt matters because too much sodium raises blood pressure, which increases the risk of heart disease and stroke. Most salt comes from processed foods, bread and takeaway meals rather than the salt shaker.",
        "nutrition",
    ),
    (
        "What are the health risks of too much sugar?",
        "Too much added sugar raises the risk of tooth decay, weight gain and type 2 diabetes. Sugary drinks are a major source, so swapping them for water or unsweetened drinks is an easy way to cut down.",
        "nutrition",
    ),
    (
        "What are the benefits of eating fruit and vegetables?",
        "Fruit and vegetables provide vitamins, minerals and fibre and are linked to a lower risk of heart disease, stroke and some cancers. Health agencies commonly recommend several portions a day of a variety of colours.",
        "nutrition",
    ),
    (
        "What is folic acid and why is it important in pregnancy?",
        "Folic acid is a B vitamin that helps the body make new cells. Taking it before conception and in early pregnancy greatly lowers the risk of neural tube defects such as spina bifida in the baby.",
        "nutrition",
    ),
    (
        "What is the difference between saturated and unsaturated fat?",
        "Saturated fat, found mainly in fatty meat, butter and cheese, can raise LDL cholesterol, while unsaturated fat, found in olive oil, nuts, seeds and oily fish, can help keep cholesterol healthy. Swapping saturated for unsaturated fat benefits the heart.",
        "nutrition",
    ),
    (
        "How much physical activity do adults need?",
        "Adults are generally advised to do at least 150 minutes of moderate activity, such as brisk walking, each week, plus muscle-strengthening activities on two or more days. Any activity is better than none.",
        "nutrition",
    ),
    # anatomy
    (
        "What does the heart do?",
        "The heart is a muscular pump that pushes blood around the body through the blood vessels. Its right side sends blood to the lungs to pick up oxygen, and its left side pumps oxygen-rich blood to the rest of the body.",
        "anatomy",
    ),
    (
        "What do the kidneys do?",
        "The kidneys are two bean-shaped organs that filter waste and extra fluid from the blood to make urine. They also help control blood pressure, balance salts in the body and support the production of red blood cells.",
        "anatomy",
    ),
    (
        "What does the liver do?",
        "The liver is a large organ in the upper right abdomen that processes nutrients, makes bile to help digest fat, stores energy, makes proteins that help blood clot, and breaks down alcohol, medicines and toxins.",
        "anatomy",
    ),
    (
        "How do the lungs work?",
        "The lungs take in air when we breathe in, and in millions of tiny air sacs called alveoli oxygen passes into the blood while carbon dioxide passes out. The carbon dioxide is then breathed out.",
        "anatomy",
    ),
    (
        "What does the pancreas do?",
        "The pancreas is a gland behind the stomach that makes digestive enzymes to break down food and hormones such as insulin and glucagon that control blood sugar levels.",
        "anatomy",
    ),
    (
        "What does the thyroid gland do?",
        "The thyroid gland is a butterfly-shaped gland in the front of the neck. It makes hormones that control metabolism, meaning how fast the body uses energy, and that affect heart rate, temperature and weight.",
        "anatomy",
    ),
    (
        "What is blood pressure?",
        "Blood pressure is the force of blood pushing against the walls of the arteries. It is written as two numbers: systolic pressure when the heart beats over diastolic pressure when the heart rests between beats.",
        "anatomy",
    ),
    (
        "What does the immune system do?",
        "The immune system is the body's defence network of white blood cells, antibodies and organs such as the lymph nodes and spleen. It recognises and fights germs such as bacteria and viruses and helps the body heal.",
        "anatomy",
    ),
    (
        "What is the function of red blood cells?",
        "Red blood cells carry oxygen from the lungs to the body's tissues and bring carbon dioxide back to the lungs to be breathed out. They get their colour from haemoglobin, an iron-rich protein.",
        "anatomy",
    ),
    (
        "What does the small intestine do?",
        "The small intestine is the long, coiled part of the gut between the stomach and large intestine, where most digestion and absorption of nutrients from food takes place.",
        "anatomy",
    ),
    (
        "What is cholesterol?",
        "Cholesterol is a waxy fat made by the liver and found in some foods. The body needs it to build cells and make hormones, but too much LDL cholesterol in the blood can clog the arteries.",
        "anatomy",
    ),
    # medicines in general terms
    (
        "What are antibiotics?",
        "Antibiotics are medicines that kill bacteria or stop them from multiplying. They treat bacterial infections but do not work against viruses such as colds and flu, and they should be taken exactly as prescribed.",
        "medicines",
    ),
    (
        "What is antibiotic resistance?",
        "Antibiotic resistance happens when bacteria change so that antibiotics no longer work against them. Overusing or misusing antibiotics speeds this up, so they should only be used when a doctor says they are needed.",
        "medicines",
    ),
    (
        "How do vaccines work?",
        "Vaccines work by training the immune system to recognise a germ, using a harmless piece or weakened form of it, so that the body can fight the real infection quickly if exposed later. They protect individuals and communities.",
        "medicines",
    ),
    (
        "What is the difference between paracetamol and ibuprofen?",
        "Paracetamol, also called acetaminophen, relieves pain and fever, while ibuprofen is an anti-inflammatory that also reduces swelling. Ibuprofen can irritate the stomach and is not suitable for everyone, so follow the label or ask a pharmacist.",
        "medicines",
    ),
    (
        "What are generic medicines?",
        "Generic medicines contain the same active ingredient, strength and effect as brand-name medicines and must meet the same quality standards. They usually cost less because they are made after the original patent expires.",
        "medicines",
    ),
    (
        "Why is it important to finish a prescribed course of medicine?",
        "Finishing a prescribed course of medicine as directed helps make sure the condition is fully treated. Stopping some medicines early or suddenly can cause symptoms to return, so talk to a doctor or pharmacist before stopping.",
        "medicines",
    ),
    (
        "What are side effects of medicines?",
        "Side effects are unwanted effects of a medicine in addition to the intended one, such as nausea, drowsiness or a rash. Most are mild, but serious or unexpected side effects should be reported to a doctor or pharmacist.",
        "medicines",
    ),
    (
        "What are statins?",
        "Statins are a group of medicines that lower LDL cholesterol by reducing how much cholesterol the liver makes. They lower the risk of heart attack and stroke in people at higher risk.",
        "medicines",
    ),
    (
        "What are antihistamines used for?",
        "Antihistamines are medicines that block histamine, a chemical released during allergic reactions. They ease symptoms of hay fever, hives and itching, and some types can cause drowsiness.",
        "medicines",
    ),
    (
        "Can I mix alcohol with medicines?",
        "Mixing alcohol with medicines can be harmful because alcohol may increase drowsiness, damage the liver or stop a medicine working properly. Check the leaflet or ask a pharmacist before drinking while taking any medicine.",
        "medicines",
    ),
    # screening and check-ups
    (
        "What is a Pap test?",
        "A Pap test, or cervical screening test, collects cells from the cervix to look for changes that could develop into cervical cancer. Many programmes now also test for HPV, and regular screening prevents many cancers.",
        "screening",
    ),
    (
        "What is a mammogram?",
        "A mammogram is an X-ray of the breast used to find breast cancer early, often before a lump can be felt. Screening programmes usually invite women from middle age onward at regular intervals.",
        "screening",
    ),
    (
        "What is a colonoscopy?",
        "A colonoscopy is a test in which a thin, flexible camera is passed into the large bowel to look for polyps or cancer. Polyps can often be removed during the test, which helps prevent bowel cancer.",
        "screening",
    ),
    (
        "Why is blood pressure screening important?",
        "Blood pressure screening is important because high blood pressure usually has no symptoms but raises the risk of heart attack and stroke. Adults are advised to have their blood pressure checked regularly.",
        "screening",
    ),
    (
        "What is a blood glucose test?",
        "A blood glucose test measures the amount of sugar in the blood. It is used to screen for and diagnose diabetes and prediabetes, and people with diabetes use finger-prick tests to monitor their levels.",
        "screening",
    ),
    (
        "What is a lipid panel?",
        "A lipid panel is a blood test that measures total cholesterol, LDL and HDL cholesterol and triglycerides. It helps estimate the risk of heart disease and guide decisions about diet and medicines.",
        "screening",
    ),
    (
        "Why are regular eye exams important?",
        "Regular eye exams are important because conditions such as glaucoma, diabetic eye disease and macular degeneration can damage vision before any symptoms appear. Early detection allows treatment that can protect sight.",
        "screening",
    ),
    (
        "What is a bone density scan?",
        "A bone density scan, or DXA scan, is a quick, low-dose X-ray test that measures the strength of bones, usually at the hip and spine. It is used to diagnose osteoporosis and estimate the risk of fractures.",
        "screening",
    ),
    (
        "Why should I check my skin for changes?",
        "Checking the skin for changes helps find skin cancer early, when it is easiest to treat. Look for new spots, sores that do not heal and moles that change in size, shape or colour, and show them to a doctor.",
        "screening",
    ),
    # general health
    (
        "How much sleep do adults need?",
        "Most adults need seven to nine hours of sleep a night, while children and teenagers need more. Regular, good-quality sleep supports memory, mood, the immune system and heart health.",
        "general health",
    ),
    (
        "What are the health benefits of quitting smoking?",
        "Quitting smoking lowers the risk of heart disease, stroke, lung disease and many cancers, and the benefits begin within days and grow over the years. Stop-smoking services, nicotine replacement and medicines can double the chance of success.",
        "general health",
    ),
    (
        "What is a normal body temperature?",
        "A normal body temperature is around 37 degrees Celsius, or 98.6 degrees Fahrenheit, though it varies slightly between people and through the day. A temperature of 38 degrees Celsius or higher is usually considered a fever.",
        "general health",
    ),
    (
        "What is a normal resting heart rate?",
        "A normal resting heart rate for adults is usually between 60 and 100 beats per minute. Fit people may have a lower rate, and a very fast, very slow or irregular heartbeat with symptoms should be checked.",
        "general health",
    ),
    (
        "How does handwashing prevent illness?",
        "Handwashing with soap and water for at least 20 seconds removes germs picked up from surfaces and people. It is one of the simplest ways to prevent the spread of colds, flu and stomach bugs.",
        "general health",
    ),
    (
        "What is body mass index?",
        "Body mass index, or BMI, is a measure that compares weight to height, calculated as weight in kilograms divided by height in metres squared. For most adults, a BMI of 18.5 to 24.9 is considered a healthy range.",
        "general health",
    ),
    (
        "What are the effects of drinking too much alcohol?",
        "Drinking too much alcohol can damage the liver, heart and brain, raise blood pressure, and increase the risk of several cancers, injuries and depression. Having several alcohol-free days each week lowers these risks.",
        "general health",
    ),
    (
        "When should I call emergency services?",
        "Emergency services should be called for chest pain, difficulty breathing, signs of a stroke, severe bleeding, a seizure that lasts more than five minutes, loss of consciousness, a severe allergic reaction or a serious injury.",
        "general health",
    ),
]

# Further aspects, kept apart so the table above stays readable; merged into CONDITIONS below.
_MORE: dict[str, dict[str, str]] = {
    "common cold": {
        "causes": "The common cold is caused by more than 200 different viruses, most often rhinoviruses. They spread through droplets from coughs and sneezes and from hands that touch contaminated surfaces and then the face.",
    },
    "influenza": {
        "doctor": "For the flu, seek urgent care if there is difficulty breathing, chest pain, confusion, severe weakness, a fever that returns after improving, or signs of dehydration. People at high risk should contact a doctor early about antiviral medicine.",
    },
    "asthma": {
        "diagnosis": "Asthma is diagnosed from a person's symptoms and breathing tests such as spirometry, which measures how much and how fast air can be breathed out, often before and after a reliever medicine. Peak flow readings over time also help.",
        "prevention": "Asthma attacks can often be prevented by taking preventer medicine as prescribed, avoiding known triggers, not smoking, getting a yearly flu vaccine and reviewing the asthma action plan with a doctor regularly.",
    },
    "COPD": {
        "prevention": "The risk of COPD can be lowered most of all by never smoking or by stopping smoking, as well as by avoiding second-hand smoke, protecting the lungs from dust and fumes at work and reducing exposure to indoor smoke from cooking fuels.",
    },
    "pneumonia": {
        "diagnosis": "Pneumonia is diagnosed by listening to the chest with a stethoscope and usually confirmed with a chest X-ray. Blood tests, a sputum sample or a pulse oximeter reading of blood oxygen may also be used.",
    },
    "acute bronchitis": {
        "causes": "Acute bronchitis is usually caused by the same viruses that cause colds and flu. Less often it is caused by bacteria, and smoke, dust or polluted air can irritate the airways and make it more likely.",
    },
    "strep throat": {
        "doctor": "For a sore throat, see a doctor if there is a fever without cough, swollen neck glands, white patches on the tonsils, or it lasts more than a week. Get urgent help for trouble breathing, drooling or being unable to swallow.",
    },
    "sinusitis": {
        "causes": "Sinusitis is usually caused by a viral infection such as a cold that makes the lining of the sinuses swell and block drainage. Allergies, nasal polyps, a deviated septum and, less often, bacteria can also cause it.",
    },
    "high blood pressure": {
        "diagnosis": "High blood pressure is diagnosed when readings are consistently at or above the threshold set by guidelines, often 130 over 80 or 140 over 90 millimetres of mercury. Several readings, sometimes taken at home, are needed to confirm it.",
        "doctor": "For high blood pressure, seek emergency care if a very high reading comes with chest pain, shortness of breath, severe headache, confusion, weakness or changes in vision, as these can signal a heart attack or stroke.",
    },
    "coronary artery disease": {
        "prevention": "The risk of coronary artery disease can be lowered by not smoking, eating a heart-healthy diet, being active, keeping a healthy weight, and controlling blood pressure, cholesterol and blood sugar.",
    },
    "heart attack": {
        "risk": "People at higher risk of a heart attack include smokers, people with high blood pressure, high cholesterol, diabetes or obesity, those who are inactive, and those with a family history of early heart disease.",
        "treatment": "A heart attack is treated in hospital by quickly reopening the blocked artery, usually with a balloon and stent, or with clot-dissolving medicine. Long-term medicines and cardiac rehabilitation help prevent another attack.",
    },
    "heart failure": {
        "causes": "Heart failure is most often caused by coronary artery disease, a past heart attack or long-term high blood pressure. Other causes include heart valve disease, diseases of the heart muscle, irregular heart rhythms and heavy alcohol use.",
    },
    "atrial fibrillation": {
        "risk": "People at higher risk of atrial fibrillation include older adults and people with high blood pressure, heart disease, an overactive thyroid, sleep apnoea, obesity or diabetes, as well as those who drink heavily.",
    },
    "stroke": {
        "prevention": "The risk of a stroke can be lowered by controlling blood pressure, not smoking, managing cholesterol and diabetes, treating atrial fibrillation, staying active, eating a healthy diet and limiting alcohol.",
    },
    "high cholesterol": {
        "causes": "High cholesterol is caused mainly by a diet high in saturated and trans fats, lack of exercise, excess weight and smoking. Genes also play a part, and some families have inherited high cholesterol from a young age.",
    },
    "type 2 diabetes": {
        "doctor": "For type 2 diabetes, see a doctor if you notice increased thirst, frequent urination, unexplained weight loss or blurred vision. Seek urgent care for very high readings with vomiting, confusion or drowsiness.",
    },
    "type 1 diabetes": {
        "causes": "Type 1 diabetes is caused by the immune system mistakenly destroying the cells in the pancreas that make insulin. Genes and possibly viral infections play a part, and it is not caused by diet or lifestyle.",
        "doctor": "For type 1 diabetes, get urgent help for signs of diabetic ketoacidosis, such as vomiting, stomach pain, fast breathing, fruity-smelling breath or drowsiness, and for low blood sugar that does not improve with sugar.",
    },
    "hypothyroidism": {
        "causes": "An underactive thyroid is most often caused by Hashimoto's disease, in which the immune system attacks the thyroid. It can also follow thyroid surgery or radioactive iodine treatment, or result from some medicines or lack of iodine.",
    },
    "hyperthyroidism": {
        "diagnosis": "An overactive thyroid is diagnosed with blood tests showing a low thyroid-stimulating hormone and high thyroid hormone levels. A thyroid scan or antibody tests can help find the cause.",
    },
    "obesity": {
        "causes": "Obesity is usually caused by taking in more energy from food and drink than the body uses over a long time. Genes, sleep, stress, some medicines, medical conditions and the surrounding food environment all play a part.",
    },
    "GERD": {
        "causes": "Acid reflux is caused by a weak or relaxed valve at the bottom of the oesophagus that lets stomach acid flow back up. Large or fatty meals, obesity, pregnancy, smoking, alcohol and lying down after eating make it more likely.",
    },
    "constipation": {
        "doctor": "For constipation, see a doctor if it lasts more than three weeks, there is blood in the stool, unexplained weight loss, severe pain, or a lasting change in bowel habits, especially after the age of 50.",
    },
    "gastroenteritis": {
        "prevention": "The spread of stomach flu can be reduced by washing hands with soap and water after using the toilet and before preparing food, cleaning surfaces with bleach-based products, and staying home until 48 hours after symptoms stop.",
    },
    "appendicitis": {
        "doctor": "For suspected appendicitis, seek urgent medical care if abdominal pain is severe, gets worse over hours, moves to the lower right side, or comes with fever and vomiting. Do not take laxatives or use a heating pad.",
    },
    "gallstones": {
        "risk": "People at higher risk of gallstones include women, people over 40, those who are overweight, pregnant or who lose weight very quickly, and people with a family history of gallstones.",
    },
    "celiac disease": {
        "diagnosis": "Celiac disease is diagnosed with a blood test for specific antibodies, usually followed by a biopsy of the small intestine taken during an endoscopy. Gluten should still be eaten until testing is complete.",
    },
    "urinary tract infection": {
        "doctor": "For a urinary tract infection, see a doctor if symptoms do not improve in a couple of days, or promptly if there is fever, back or side pain, vomiting, blood in the urine, or if the person is a man, pregnant or a child.",
    },
    "kidney stones": {
        "causes": "Kidney stones form when urine contains more crystal-forming substances, such as calcium, oxalate or uric acid, than the fluid can dissolve. Not drinking enough, a diet high in salt or animal protein, obesity and family history all raise the risk.",
    },
    "chronic kidney disease": {
        "symptoms": "Chronic kidney disease usually causes no symptoms in its early stages. Later symptoms can include tiredness, swollen ankles, shortness of breath, itching, muscle cramps, nausea and passing more or less urine.",
    },
    "osteoarthritis": {
        "prevention": "The risk of osteoarthritis can be lowered by keeping a healthy weight, staying active with low-impact exercise, strengthening the muscles around the joints and avoiding joint injuries.",
    },
    "rheumatoid arthritis": {
        "diagnosis": "Rheumatoid arthritis is diagnosed from the pattern of joint symptoms, a physical exam, blood tests for inflammation and antibodies such as rheumatoid factor and anti-CCP, and sometimes X-rays or ultrasound of the joints.",
    },
    "gout": {
        "prevention": "Gout attacks can be prevented by drinking plenty of water, limiting alcohol, sugary drinks, red meat and shellfish, keeping a healthy weight and taking uric acid-lowering medicine if prescribed.",
    },
    "osteoporosis": {
        "treatment": "Osteoporosis is treated with medicines that slow bone loss or build bone, such as bisphosphonates, together with calcium, vitamin D, exercise and steps to prevent falls at home.",
    },
    "low back pain": {
        "causes": "Low back pain is most often caused by strained muscles or ligaments from lifting, twisting or poor posture. Other causes include disc problems, arthritis of the spine and, rarely, infection, fractures or cancer.",
        "prevention": "The risk of low back pain can be lowered by staying active, strengthening core and back muscles, lifting with the knees bent and the load close to the body, keeping a healthy weight and taking breaks from sitting.",
    },
    "migraine": {
        "doctor": "For migraine, see a doctor if headaches are frequent, getting worse or not helped by pain relievers. Seek urgent care for a sudden, severe headache, or one with weakness, confusion, fever and stiff neck, or loss of vision.",
    },
    "tension headache": {
        "symptoms": "Common symptoms of a tension headache include a dull, pressing pain on both sides of the head, tightness across the forehead or back of the head, and tender neck or shoulder muscles. Unlike migraine, it rarely causes vomiting.",
    },
    "epilepsy": {
        "causes": "Epilepsy can be caused by brain injury, stroke, brain infections, tumours or genetic factors, but in many people no cause is found. Seizures in people with epilepsy may be triggered by missed medicine, lack of sleep, alcohol or stress.",
    },
    "Alzheimer's disease": {
        "risk": "People at higher risk of Alzheimer's disease include older adults, especially over 65, and those with a family history of it. High blood pressure, diabetes, smoking, inactivity and hearing loss may also raise the risk.",
    },
    "depression": {
        "causes": "Depression is caused by a mix of factors, including life events such as loss or stress, family history, changes in brain chemistry, long-term illness, some medicines, and alcohol or drug use.",
    },
    "anxiety disorder": {
        "causes": "Generalized anxiety disorder is thought to result from a combination of genes, brain chemistry, personality and life experiences, such as stress, trauma or long-term illness. It often runs in families.",
    },
    "eczema": {
        "causes": "Eczema is caused by a combination of genes and a weakened skin barrier that lets moisture out and irritants in. Flares can be triggered by soaps, detergents, wool, heat, sweat, stress, allergens and dry weather.",
    },
    "psoriasis": {
        "causes": "Psoriasis is caused by an overactive immune system that speeds up the growth of skin cells, and it often runs in families. Flares can be triggered by stress, infections such as strep throat, skin injury, smoking, alcohol and some medicines.",
    },
    "acne": {
        "causes": "Acne is caused by oil glands in the skin producing too much sebum, which mixes with dead skin cells to block pores, where bacteria grow. Hormonal changes during puberty, periods and pregnancy often make it worse.",
    },
    "shingles": {
        "treatment": "Shingles is treated with antiviral medicines, which work best when started within three days of the rash appearing, along with pain relief and keeping the rash clean and covered.",
    },
    "athlete's foot": {
        "prevention": "The risk of athlete's foot can be lowered by drying the feet well, especially between the toes, wearing clean cotton socks, changing shoes often, and wearing flip-flops in shared showers and changing rooms.",
    },
    "conjunctivitis": {
        "prevention": "The spread of pink eye can be reduced by washing hands often, not touching or rubbing the eyes, and not sharing towels, pillows, eye drops or eye make-up.",
    },
    "ear infection": {
        "prevention": "The risk of a middle ear infection in children can be lowered by keeping them away from tobacco smoke, keeping vaccinations up to date, washing hands to avoid colds, and breastfeeding if possible.",
    },
    "glaucoma": {
        "risk": "People at higher risk of glaucoma include those over 60, people with a family history of glaucoma, people of African or Asian descent, and those with diabetes, high eye pressure or severe short-sightedness.",
    },
    "cataracts": {
        "risk": "People at higher risk of cataracts include older adults, people with diabetes, smokers, heavy drinkers, and those who have had a lot of sun exposure, eye injuries or long-term use of steroid medicines.",
    },
    "iron deficiency anemia": {
        "diagnosis": "Iron deficiency anemia is diagnosed with blood tests, including a full blood count to measure haemoglobin and tests of ferritin, which shows the body's iron stores. Further tests may look for a source of blood loss.",
    },
    "Lyme disease": {
        "treatment": "Lyme disease is treated with a course of antibiotics, such as doxycycline, which usually cures it when started early. Later stages may need longer or intravenous treatment.",
    },
    "sleep apnea": {
        "risk": "People at higher risk of sleep apnea include those who are overweight, men, older adults, people with a large neck, smokers, people who drink alcohol in the evening, and those with a family history of it.",
    },
}

for _name, _aspects in _MORE.items():
    for _aspect, _answer in _aspects.items():
        assert _aspect not in CONDITIONS[_name], (_name, _aspect)
        CONDITIONS[_name][_aspect] = _answer
